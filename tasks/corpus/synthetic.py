"""Seeded GSM8K-style word problems with worked solutions, in disjoint splits.

Each problem is a short story about one person's collection of things, changed by 2–5 arithmetic
steps (+, −, ×, ÷ with exact integer results); the worked solution carries GSM8K calculator
annotations and ends with ``#### <answer>``. A generated ``Problem``::

    {"id": "synthetic-test-0", "source": "synthetic", "split": "test", "answer": "40",
     "question": "Mia has 12 shells. She finds 3 buckets with 6 shells in each. Then she gives away
                  half of the shells. How many shells does Mia have now?",
     "solution": "The buckets hold 3*6 = <<3*6=18>>18 shells.\\nMia has 12+18 = <<12+18=30>>30 ...
                  \\n#### 15",
     "meta": {"n_steps": 3, "values": [18, 30, 15], "ops": ["*", "+", "/"],
              "calcs": [[3, "*", 6, 18], [12, "+", 18, 30], [30, "/", 2, 15]], "scenario": "shells"}}

``meta.calcs`` lists every step as ``[a, op, b, result]`` in solution order, so the verifier can
check each line against known values. Splits (``pretrain``, ``sft``, ``pool``, ``test``) are a
function of the question text (a sha256 bucket), so no question can occur in two splits.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from conf.schema import SyntheticConfig, TrapConfig
from tasks.common.records import Problem

SPLITS = ("test", "pool", "sft", "pretrain")
SOURCE = "synthetic"

NAMES = [
    ("Mia", "she"), ("Liam", "he"), ("Ava", "she"), ("Noah", "he"), ("Emma", "she"), ("Omar", "he"),
    ("Sofia", "she"), ("Lucas", "he"), ("Zoe", "she"), ("Ethan", "he"), ("Lily", "she"), ("Jack", "he"),
    ("Nora", "she"), ("Ben", "he"), ("Ruby", "she"), ("Leo", "he"), ("Grace", "she"), ("Sam", "he"),
    ("Hana", "she"), ("Ravi", "he"), ("Chloe", "she"), ("Diego", "he"), ("Ella", "she"), ("Finn", "he"),
    ("Maya", "she"), ("Owen", "he"), ("Aisha", "she"), ("Kai", "he"), ("Ivy", "she"), ("Tom", "he"),
]


@dataclass(frozen=True)
class Scenario:
    unit: str  # plural noun
    container: str  # plural noun of what holds several units
    gain: tuple[str, ...]  # verbs (3rd person singular) for getting more
    lose: tuple[str, ...]  # verbs for losing some


SCENARIOS = [
    Scenario("apples", "bags", ("picks", "buys"), ("eats", "sells", "gives away")),
    Scenario("stickers", "packs", ("buys", "gets", "wins"), ("uses", "gives away", "loses")),
    Scenario("marbles", "jars", ("finds", "wins", "buys"), ("loses", "gives away", "trades")),
    Scenario("cookies", "trays", ("bakes", "buys"), ("eats", "sells", "gives away")),
    Scenario("pencils", "boxes", ("buys", "gets"), ("loses", "gives away", "breaks")),
    Scenario("shells", "buckets", ("finds", "collects"), ("gives away", "loses", "sells")),
    Scenario("books", "boxes", ("buys", "borrows"), ("sells", "donates", "gives away")),
    Scenario("cards", "decks", ("buys", "wins", "gets"), ("trades", "loses", "gives away")),
    Scenario("stamps", "sheets", ("buys", "collects"), ("uses", "sells", "gives away")),
    Scenario("eggs", "cartons", ("collects", "buys"), ("uses", "sells", "eats")),
    Scenario("flowers", "bunches", ("picks", "buys", "grows"), ("sells", "gives away")),
    Scenario("beads", "strings", ("buys", "finds"), ("uses", "loses", "gives away")),
    Scenario("coins", "purses", ("saves", "finds", "earns"), ("spends", "loses", "gives away")),
    Scenario("toy cars", "crates", ("buys", "wins"), ("sells", "gives away", "loses")),
    Scenario("candies", "bags", ("buys", "gets"), ("eats", "shares", "gives away")),
]

THEN = ("Then", "After that", "Later", "Next", "The next day")
FINAL_Q = (
    "How many {unit} does {Name} have now?",
    "How many {unit} does {Name} have at the end?",
    "How many {unit} does {Name} end up with?",
    "How many {unit} are left with {Name}?",
)
TIMES_WORD = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
PART_WORD = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}


@dataclass
class _Story:
    """The state while one problem is written: sentences, solution lines and the steps taken."""

    rng: random.Random
    name: str
    pron: str
    sc: Scenario
    value: int
    max_value: int
    question: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    calcs: list[list] = field(default_factory=list)
    traps: list[dict] = field(default_factory=list)
    friends: set[str] = field(default_factory=set)  # names already in the story
    round_share: float = 0.0  # share of added / taken-away amounts that are multiples of 5

    def amount(self, low: int, high: int) -> int:
        """An amount in [low, high]; a multiple of 5 with probability ``round_share`` (when one fits)."""
        if high >= 5 and _chance(self.rng, self.round_share):
            return 5 * self.rng.randint(max(1, -(-low // 5)), high // 5)
        return self.rng.randint(low, high)

    @property
    def Pron(self) -> str:  # noqa: N802 - capitalised pronoun, reads like the text it makes
        return self.pron.capitalize()

    def who(self) -> str:
        return self.rng.choice([self.name, self.Pron])

    def calc(self, a: int, op: str, b: int) -> tuple[int, str]:
        """Record ``a op b`` and return (result, GSM8K-style ``a op b = <<a op b=r>>r``)."""
        r = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        if op == "/":
            assert a % b == 0, (a, b)
        self.calcs.append([a, op, b, r])
        return r, f"{a}{op}{b} = <<{a}{op}{b}={r}>>{r}"


# An op writes one question sentence and 1–2 solution lines; it returns False when the current
# value does not allow it (the caller then picks another). ``cost`` = its number of steps.
OpFn = Callable[[_Story], bool]


def _op_add(s: _Story) -> bool:
    room = s.max_value - s.value
    if room < 2:
        return False
    x = s.amount(2, min(room, 40))
    verb = s.rng.choice(s.sc.gain)
    s.question.append(s.rng.choice([
        f"{s.rng.choice(THEN)}, {s.pron} {verb} {x} more {s.sc.unit}.",
        f"{s.Pron} {verb} another {x} {s.sc.unit}.",
        f"{s.rng.choice(THEN)}, {s.name} {verb} {x} {s.sc.unit}.",
    ]))
    r, c = s.calc(s.value, "+", x)
    s.lines.append(f"{s.who()} has {c} {s.sc.unit} after that.")
    s.value = r
    return True


def _op_sub(s: _Story) -> bool:
    if s.value < 3:
        return False
    x = s.amount(1, min(s.value - 1, 40))
    verb = s.rng.choice(s.sc.lose)
    s.question.append(s.rng.choice([
        f"{s.rng.choice(THEN)}, {s.pron} {verb} {x} of them.",
        f"{s.Pron} {verb} {x} {s.sc.unit}.",
        f"{s.rng.choice(THEN)}, {s.name} {verb} {x} {s.sc.unit}.",
    ]))
    r, c = s.calc(s.value, "-", x)
    s.lines.append(f"{s.who()} has {c} {s.sc.unit} left.")
    s.value = r
    return True


def _op_mul(s: _Story) -> bool:
    ks = [k for k in (2, 3, 4, 5) if s.value * k <= s.max_value]
    if not ks:
        return False
    k = s.rng.choice(ks)
    s.question.append(s.rng.choice([
        f"{s.rng.choice(THEN)}, {s.pron} ends up with {TIMES_WORD[k]} as many {s.sc.unit} as before.",
        f"{s.Pron} makes the number of {s.sc.unit} {k} times as large.",
    ]))
    r, c = s.calc(s.value, "*", k)
    s.lines.append(f"{s.who()} now has {c} {s.sc.unit}.")
    s.value = r
    return True


def _op_div(s: _Story) -> bool:
    ks = [k for k in (2, 3, 4, 5) if s.value % k == 0 and s.value // k >= 1]
    if not ks:
        return False
    k = s.rng.choice(ks)
    if s.rng.random() < 0.5:
        s.question.append(f"{s.Pron} puts the {s.sc.unit} into {k} equal piles and keeps one pile.")
        r, c = s.calc(s.value, "/", k)
        s.lines.append(f"Each pile has {c} {s.sc.unit}, so {s.pron} keeps {r}.")
    else:
        s.question.append(f"{s.rng.choice(THEN)}, {s.pron} keeps only {PART_WORD[k]} of the {s.sc.unit}.")
        r, c = s.calc(s.value, "/", k)
        s.lines.append(f"{s.who()} keeps {c} {s.sc.unit}.")
    s.value = r
    return True


def _op_pack_gain(s: _Story) -> bool:
    room = s.max_value - s.value
    pairs = [(a, b) for a in range(2, 7) for b in range(2, 13) if a * b <= room]
    if not pairs:
        return False
    a, b = s.rng.choice(pairs)
    verb = s.rng.choice(s.sc.gain)
    s.question.append(s.rng.choice([
        f"{s.Pron} {verb} {a} {s.sc.container} with {b} {s.sc.unit} in each.",
        f"{s.rng.choice(THEN)}, {s.name} {verb} {a} {s.sc.container} of {s.sc.unit}, "
        f"and each holds {b} {s.sc.unit}.",
    ]))
    c_val, c = s.calc(a, "*", b)
    s.lines.append(f"The {s.sc.container} hold {c} {s.sc.unit}.")
    r, c2 = s.calc(s.value, "+", c_val)
    s.lines.append(f"{s.who()} has {c2} {s.sc.unit} now.")
    s.value = r
    return True


def _op_pack_lose(s: _Story) -> bool:
    pairs = [(a, b) for a in range(2, 7) for b in range(2, 11) if a * b < s.value]
    if not pairs:
        return False
    a, b = s.rng.choice(pairs)
    s.question.append(s.rng.choice([
        f"{s.Pron} gives {a} friends {b} {s.sc.unit} each.",
        f"{s.rng.choice(THEN)}, {s.pron} gives {b} {s.sc.unit} to each of {a} friends.",
    ]))
    c_val, c = s.calc(a, "*", b)
    s.lines.append(f"{s.Pron} gives away {c} {s.sc.unit}.")
    r, c2 = s.calc(s.value, "-", c_val)
    s.lines.append(f"{s.who()} has {c2} {s.sc.unit} left.")
    s.value = r
    return True


ONE_STEP: Sequence[tuple[OpFn, float]] = ((_op_add, 1.0), (_op_sub, 1.0), (_op_mul, 0.6), (_op_div, 0.6))
TWO_STEP: Sequence[tuple[OpFn, float]] = ((_op_pack_gain, 1.0), (_op_pack_lose, 0.7))


def _pick(rng: random.Random, options: Sequence[tuple[OpFn, float]]) -> list[OpFn]:
    """Options in a weighted random order (each tried until one fits)."""
    pool = list(options)
    order: list[OpFn] = []
    while pool:
        fn, _ = pick = rng.choices(pool, weights=[w for _, w in pool])[0]
        order.append(fn)
        pool.remove(pick)
    return order


@dataclass(frozen=True)
class Generated:
    question: str
    solution: str
    answer: str
    meta: dict


def _chance(rng: random.Random, p: float) -> bool:
    """True with probability ``p``; draws nothing when ``p`` is 0, so a trap that is off leaves the stream
    (and every problem after it) as it was."""
    return p > 0 and rng.random() < p


def _op_dozen_gain(s: _Story) -> bool:
    """A gain counted in dozens: the unit conversion (12 per dozen) is a step of its own."""
    room = s.max_value - s.value
    if room < 12:
        return False
    a = s.rng.randint(1, min(room // 12, 5))
    verb = s.rng.choice(s.sc.gain)
    s.question.append(s.rng.choice([
        f"{s.Pron} {verb} {a} dozen {s.sc.unit}.",
        f"{s.rng.choice(THEN)}, {s.name} {verb} {a} dozen more {s.sc.unit}.",
    ]))
    c_val, c = s.calc(a, "*", 12)
    s.lines.append(f"{a} dozen is {c} {s.sc.unit}.")
    wrong = s.value + a  # a dozen read as one
    r, c2 = s.calc(s.value, "+", c_val)
    s.lines.append(f"{s.who()} has {c2} {s.sc.unit} now.")
    s.traps.append({"type": "conversion", "wrong": [wrong]})
    s.value = r
    return True


def _comparison_end(s: _Story) -> None:
    """The friend has N more/fewer and the total is asked (two steps); reading 'more' as 'fewer' (or the
    other way round) is the trap."""
    rng, name, unit = s.rng, s.name, s.sc.unit
    friend, _ = rng.choice([n for n in NAMES if n[0] != name])
    more = rng.random() < 0.5 or s.value < 3
    x = rng.randint(1, 20) if more else rng.randint(1, min(s.value - 1, 20))
    s.question.append(f"{friend} has {x} {'more' if more else 'fewer'} {unit} than {name}. "
                      f"How many {unit} do {name} and {friend} have together?")
    fv, c = s.calc(s.value, "+" if more else "-", x)
    s.lines.append(f"{friend} has {c} {unit}.")
    reversed_total = s.value + (s.value - x if more else s.value + x)
    total, c2 = s.calc(s.value, "+", fv)
    s.lines.append(f"Together they have {c2} {unit}.")
    s.traps.append({"type": "comparison", "wrong": [reversed_total] if reversed_total >= 0 else []})
    s.friends.add(friend)
    s.value = total


def _difference_end(s: _Story) -> None:
    """'How many more/fewer does Name have than Friend?' (one step); adding the two counts, or answering
    with Name's own count, is the trap."""
    rng, name, unit, v = s.rng, s.name, s.sc.unit, s.value
    friend, _ = rng.choice([n for n in NAMES if n[0] != name])
    # fewer: the friend has more, and "how many fewer does Name have" is asked
    fewer = v < 2 or (v < s.max_value and rng.random() < 0.5)
    f = rng.randint(v + 1, min(v + 20, max(s.max_value, v + 1))) if fewer else rng.randint(1, v - 1)
    s.question.append(f"{friend} has {f} {unit}. How many {'fewer' if fewer else 'more'} {unit} does "
                      f"{name} have than {friend}?")
    r, c = (s.calc(f, "-", v) if fewer else s.calc(v, "-", f))
    s.lines.append(f"{name} has {c} {'fewer' if fewer else 'more'} {unit} than {friend}.")
    s.traps.append({"type": "difference", "wrong": [v + f, v]})
    s.friends.add(friend)
    s.value = r


DISTRACTOR_FORMS = (
    "{Friend} has {d} {unit}.",
    "{Name}'s neighbour has {d} {unit}.",
    "{Name} is {d} years old.",
    "{Name}'s {container} are {d} centimetres tall.",
)


def _add_distractor(s: _Story) -> None:
    """An irrelevant sentence with a number not used anywhere else (neither in the question nor in the
    solution), placed between the story's sentences
    (never first or last). Adding or subtracting that number is the trap."""
    rng = s.rng
    used = {int(x) for x in re.findall(r"\d+", " ".join(s.question))} | {v for c in s.calcs for v in c}
    taken = {w for t in s.traps for w in t["wrong"]}  # keep each wrong answer owned by one trap
    d = rng.choice([n for n in range(3, 60) if n not in used and not {s.value + n, s.value - n} & taken])
    friend, _ = rng.choice([n for n in NAMES if n[0] != s.name and n[0] not in s.friends])
    form = rng.choice(DISTRACTOR_FORMS)
    sentence = form.format(Friend=friend, Name=s.name, d=d, unit=s.sc.unit, container=s.sc.container)
    s.question.insert(rng.randint(1, len(s.question) - 1), sentence)
    s.traps.append({"type": "distractor", "value": d, "wrong": [s.value + d] + ([s.value - d] if s.value >= d else [])})


def _add_bystander(s: _Story, n_events: int, direction: int | None) -> None:
    """Another person's gain or loss, in the very sentence forms of the protagonist's own steps (only the name
    differs), placed among the story's ``n_events`` step sentences (``s.question[1 : 1 + n_events]``). The
    bystander's pronoun is the other one, so the question stays unambiguous. Counting it is the trap: an entity-tracking error, as with GSM-IC's in-topic distractors.

    The number is used nowhere else, so a stated calculation that uses it is typed ``bystander``. The answer
    that falling for it gives is recorded when it does not depend on where the sentence sits: every step an
    addition or subtraction, ``direction`` +1 (the end count is asked: it moves with the bystander's change)
    or -1 (the start is asked: it moves against it); None records no answer."""
    rng = s.rng
    used = {int(x) for x in re.findall(r"\d+", " ".join(s.question))} | {v for c in s.calcs for v in c}
    taken = {w for t in s.traps for w in t["wrong"]}
    sign = 1 if rng.random() < 0.6 else -1  # a gain or a loss
    shift = (direction or 0) * sign
    free = [n for n in range(2, 41) if n not in used]  # far more than a problem of <= 5 steps uses
    ds = [n for n in free if s.value + shift * n not in taken and s.value + shift * n >= 0]
    if not ds:  # falling for it would give a negative count or another trap's answer: record no answer
        ds, direction = free, None
    # the other pronoun, so a later "she" or "he" still names the protagonist only
    friend, _ = rng.choice([n for n in NAMES if n[1] != s.pron and n[0] not in s.friends])
    d = rng.choice(ds)
    unit, then = s.sc.unit, rng.choice(THEN)
    if sign > 0:
        verb = rng.choice(s.sc.gain)
        sentence = rng.choice([f"{then}, {friend} {verb} {d} more {unit}.", f"{friend} {verb} another {d} {unit}.",
                               f"{then}, {friend} {verb} {d} {unit}."])
    else:
        verb = rng.choice(s.sc.lose)
        sentence = rng.choice([f"{then}, {friend} {verb} {d} {unit}.", f"{friend} {verb} {d} {unit}."])
    s.question.insert(rng.randint(1, 1 + n_events), sentence)
    s.friends.add(friend)
    s.traps.append({"type": "bystander", "value": d, "wrong": [s.value + shift * d] if direction else []})


def _forward_steps(s: _Story, n_steps: int, options: Sequence[tuple[OpFn, float]] = ONE_STEP,
                   two_step: Sequence[tuple[OpFn, float]] = TWO_STEP) -> None:
    remaining = n_steps
    while remaining > 0:
        opts = list(options) + (list(two_step) * (remaining >= 2 and s.rng.random() < 0.5))
        for fn in _pick(s.rng, opts):
            cost = 2 if fn in (_op_pack_gain, _op_pack_lose) else 1
            if cost <= remaining and fn(s):
                remaining -= cost
                break
        else:  # pragma: no cover - add or sub always fits (value in [3, max-2]) or the other does
            raise RuntimeError(f"no operation fits value {s.value}")


def _meta(s: _Story, structure: str) -> dict:
    return {"n_steps": len(s.calcs), "values": [c[3] for c in s.calcs], "ops": [c[1] for c in s.calcs],
            "calcs": s.calcs, "scenario": s.sc.unit, "structure": structure,
            "traps": [{**t, "wrong": [str(w) for w in t["wrong"] if w != s.value]} for t in s.traps]}


def generate_problem(rng: random.Random, n_steps: int, max_value: int = 500,
                     traps: TrapConfig | None = None, round_share: float = 0.0) -> Generated:
    """One problem with exactly ``n_steps`` arithmetic steps (every value an integer in [0, max_value]).

    ``traps`` adds known structural traps (see :class:`conf.schema.TrapConfig`); ``meta.traps`` lists
    each with the answers that falling for it gives, ``meta.structure`` is ``forward`` or ``backward``."""
    if not 1 <= n_steps <= 5:
        raise ValueError(f"n_steps must be in 1..5, got {n_steps}")
    traps = traps or TrapConfig()
    if _chance(rng, traps.backward):
        return _backward_problem(rng, n_steps, max_value, traps, round_share)
    name, pron = rng.choice(NAMES)
    sc = rng.choice(SCENARIOS)
    start = rng.randint(5, min(60, max_value))
    together = n_steps >= 3 and max_value >= 60 and _chance(rng, traps.comparison)
    difference = not together and n_steps >= 2 and _chance(rng, traps.difference)
    dozen = n_steps - 2 * together - difference >= 2 and _chance(rng, traps.conversion)
    # "together" ends with friend = v ± x and total = v + friend: keep v small enough for both.
    s = _Story(rng, name, pron, sc, start, (max_value - 20) // 2 if together else max_value, round_share=round_share)
    s.value = start = min(start, s.max_value - 2)
    s.question.append(rng.choice([f"{name} has {start} {sc.unit}.",
                                  f"{name} starts with {start} {sc.unit}.",
                                  f"There are {start} {sc.unit} in {name}'s collection."]))
    remaining = n_steps - (2 if together else 0) - (1 if difference else 0)
    if dozen and _op_dozen_gain(s):
        remaining -= 2
    _forward_steps(s, remaining)
    n_events = len(s.question) - 1
    if together:
        _comparison_end(s)
    elif difference:
        _difference_end(s)
    else:
        s.question.append(rng.choice(FINAL_Q).format(unit=sc.unit, Name=name))
    if _chance(rng, traps.bystander):
        plain = not (together or difference) and all(c[1] in "+-" for c in s.calcs)
        _add_bystander(s, n_events, 1 if plain else None)
    if _chance(rng, traps.distractor):
        _add_distractor(s)
    answer = str(s.value)
    solution = "\n".join(s.lines) + f"\n#### {answer}"
    return Generated(" ".join(s.question), solution, answer, _meta(s, "forward"))


UNDO = {"+": "-", "-": "+", "*": "/", "/": "*"}
UNDO_LINE = {
    "+": "Before getting {b} more, {who} had {c} {unit}.",
    "-": "Before losing {b}, {who} had {c} {unit}.",
    "*": "Before the number grew {b} times, {who} had {c} {unit}.",
    "/": "Before keeping one part in {b}, {who} had {c} {unit}.",
}


def _backward_problem(rng: random.Random, n_steps: int, max_value: int, traps: TrapConfig,
                      round_share: float = 0.0) -> Generated:
    """The end count is given and the start asked: the solution undoes the steps last to first with the
    inverse operations. Applying the steps forward to the end count is the trap."""
    name, pron = rng.choice(NAMES)
    sc = rng.choice(SCENARIOS)
    start = rng.randint(5, min(60, max_value))
    story = _Story(rng, name, pron, sc, start, max_value, round_share=round_share)
    _forward_steps(story, n_steps, two_step=())
    end, forward = story.value, [tuple(c) for c in story.calcs]
    s = _Story(rng, name, pron, sc, end, max_value)
    s.question = [rng.choice([f"{name} has some {sc.unit}.", f"{name} starts with some {sc.unit}."]),
                  *story.question, f"Now {pron} has {end} {sc.unit}.",
                  rng.choice([f"How many {sc.unit} did {name} have at the start?",
                              f"How many {sc.unit} did {name} start with?"])]
    for _, op, b, _ in reversed(forward):
        r, c = s.calc(s.value, UNDO[op], b)
        s.lines.append(UNDO_LINE[op].format(b=b, who=rng.choice([name, pron]), c=c, unit=sc.unit))
        s.value = r
    assert s.value == start, (s.value, start)
    wrong = Fraction(end)
    for _, op, b, _ in forward:  # the steps applied to the end count, as if it were the start
        wrong = {"+": wrong + b, "-": wrong - b, "*": wrong * b, "/": wrong / b}[op]
    s.traps.append({"type": "backward", "wrong": [int(wrong)] if wrong.denominator == 1 and wrong >= 0 else []})
    if _chance(rng, traps.bystander):
        _add_bystander(s, len(story.question), -1 if all(c[1] in "+-" for c in forward) else None)
    if _chance(rng, traps.distractor):
        _add_distractor(s)
    answer = str(s.value)
    solution = "\n".join(s.lines) + f"\n#### {answer}"
    return Generated(" ".join(s.question), solution, answer, _meta(s, "backward"))


TRAP_KINDS = ("distractor", "conversion", "comparison", "difference", "backward", "bystander")
STRUCTURAL_KINDS = (*TRAP_KINDS, "other_structural")
ERROR_KINDS = ("arithmetic", *STRUCTURAL_KINDS, "no_answer")


def _number(text: str | None) -> Fraction | None:
    try:
        return Fraction(str(text).replace(",", "").strip()) if text is not None else None
    except (ValueError, ZeroDivisionError):
        return None


def known_error(meta: dict, gold: str, answer: str | None,
                calcs: Sequence[tuple[Fraction, str, Fraction, Fraction]]) -> str:
    """What the generator knows about one solution of a synthetic problem, in this order:

    ``correct``; ``no_answer``; a trap's type (``TRAP_KINDS``) when the answer is the one falling for that
    trap gives, or a stated calculation uses the number of a distractor or a bystander; ``arithmetic`` when a stated
    calculation ``a op b = r`` (``calcs``, e.g. from ``tasks.evaluation.grading.stated_calculations``) is false;
    else ``other_structural``: a wrong answer with every stated calculation true (a step left out, a
    number misread, the wrong operation).

    >>> meta = {"traps": [{"type": "distractor", "value": 7, "wrong": ["27"]}]}
    >>> one = Fraction(1)
    >>> [known_error(meta, "20", a, c) for a, c in [("20", []), ("27", []), ("21", [(one, "+", one, Fraction(3))]),
    ...                                              ("25", [(one, "+", one, Fraction(2))])]]
    ['correct', 'distractor', 'arithmetic', 'other_structural']
    """
    value, truth = _number(answer), _number(gold)
    if value is None:
        return "no_answer"
    if value == truth:
        return "correct"
    for trap in meta.get("traps") or ():
        if any(_number(w) == value for w in trap.get("wrong", ())):
            return trap["type"]
        if ("value" in trap and trap["value"] not in meta.get("values", ())
                and any(trap["value"] in (a, b) for a, _, b, _ in calcs)):
            return trap["type"]
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "/": lambda a, b: a / b if b else None}
    if any(ops[op](a, b) != r for a, op, b, r in calcs if op in ops):
        return "arithmetic"
    return "other_structural"


def split_of(question: str, cfg: SyntheticConfig) -> str | None:
    """The split a question belongs to: a sha256 bucket sized by the requested split counts."""
    counts = {"test": cfg.n_test, "pool": cfg.n_pool, "sft": cfg.n_sft, "pretrain": cfg.n_pretrain}
    total = sum(counts.values())
    if total == 0:
        return None
    u = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += counts[name] / total
        if u < edge:
            return name
    return SPLITS[-1] if counts[SPLITS[-1]] else None


def _step_weights(cfg: SyntheticConfig) -> tuple[list[int], list[float]]:
    steps = list(range(cfg.min_steps, cfg.max_steps + 1))
    sw = cfg.step_weights or {}
    weights = [float(sw.get(n, 0.0 if sw else 1.0)) for n in steps]
    if sum(weights) <= 0:
        raise ValueError(f"step_weights {cfg.step_weights} give no weight to steps {steps}")
    return steps, weights


def generate_splits(cfg: SyntheticConfig, splits: Sequence[str] = SPLITS) -> dict[str, list[Problem]]:
    """All requested splits at once (deterministic for a given config).

    Problems are drawn from one seeded stream; each goes to the split its question hashes to, until
    every split has its count. Duplicated questions are dropped. With ``cfg.pretrain_seed`` set (and not
    ``cfg.seed``), the pretraining split comes from a stream of its own seed: the same corpus whatever
    ``cfg.seed`` is.
    """
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown synthetic split(s) {sorted(unknown)}; expected {SPLITS}")
    if corpus_seed(cfg) != cfg.seed and "pretrain" in splits:
        # the pretraining split from its own stream; the others from cfg.seed's. Both streams bucket every
        # question by its text (split_of), so a pretraining question never lands in another split.
        rest = [name for name in splits if name != "pretrain"]
        out = generate_splits(cfg, rest) if rest else {}
        pinned = cfg.model_copy(update={"seed": corpus_seed(cfg), "pretrain_seed": None})
        out["pretrain"] = generate_splits(pinned, ["pretrain"])["pretrain"]
        return {name: out[name] for name in splits}
    want = {"test": cfg.n_test, "pool": cfg.n_pool, "sft": cfg.n_sft, "pretrain": cfg.n_pretrain}
    out: dict[str, list[Problem]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    steps, weights = _step_weights(cfg)
    rng = random.Random(cfg.seed)
    needed = {name for name in splits if want[name] > 0}
    tries, max_tries = 0, 50 * sum(want.values()) + 1000
    while needed:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(f"could not fill synthetic splits {sorted(needed)} after {max_tries} draws")
        g = generate_problem(rng, rng.choices(steps, weights=weights)[0], cfg.max_value, cfg.traps, cfg.round_share)
        split = split_of(g.question, cfg)
        if split is None or g.question in seen or len(out[split]) >= want[split]:
            continue
        seen.add(g.question)
        i = len(out[split])
        out[split].append(Problem(id=f"{SOURCE}-{split}-{i}", question=g.question, answer=g.answer,
                                  solution=g.solution, source=SOURCE, split=split, meta=g.meta))
        if len(out[split]) >= want[split]:
            needed.discard(split)
    return {name: out[name] for name in splits}


def corpus_seed(cfg: SyntheticConfig) -> int:
    """The seed the pretraining split is drawn with: ``cfg.pretrain_seed``, else ``cfg.seed``."""
    return cfg.seed if cfg.pretrain_seed is None else cfg.pretrain_seed


def generate_split(cfg: SyntheticConfig, split: str) -> list[Problem]:
    """One split; the same problems as ``generate_splits(cfg)[split]``."""
    return generate_splits(cfg, [split])[split]


SEPARATORS = ("\n", "\n\n", " ")


def pretrain_documents(problems: Sequence[Problem], instruction: str | None, seed: int = 0) -> list[str]:
    """Problems as ChatML conversations (user = question + instruction, assistant = solution).

    The separator between question and instruction varies (newline, blank line, space) so the model
    does not depend on how a later stage joins them.
    """
    from training.tiny import render_chat, user_message

    rng = random.Random(seed)
    docs = []
    for p in problems:
        if p.solution is None:
            raise ValueError(f"problem {p.id}: no solution to pretrain on")
        user = user_message(p.question, instruction, rng.choice(SEPARATORS))
        docs.append(render_chat([{"role": "user", "content": user}, {"role": "assistant", "content": p.solution}]))
    return docs
