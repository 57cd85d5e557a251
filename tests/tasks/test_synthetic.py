"""The synthetic generator: determinism, exact arithmetic, split disjointness, metadata."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from conf.schema import SyntheticConfig, TrapConfig
from tasks.corpus.synthetic import (
    SPLITS,
    TRAP_KINDS,
    generate_problem,
    generate_split,
    generate_splits,
    known_error,
    pretrain_documents,
    split_of,
)

SMALL = SyntheticConfig(seed=7, n_pretrain=300, n_sft=120, n_pool=40, n_test=40)
ANNOT = re.compile(r"<<(\d+)([+\-*/])(\d+)=(\d+)>>(\d+)")


def check_calc(a: str, op: str, b: str, r: str) -> bool:
    """Exact evaluation of one ``a op b = r`` annotation with Fraction (no eval)."""
    x, y = Fraction(a), Fraction(b)
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None}[op]
    return value == Fraction(r)


@pytest.fixture(scope="module")
def splits():
    return generate_splits(SMALL)


def test_counts_and_determinism(splits):
    assert {k: len(v) for k, v in splits.items()} == {"test": 40, "pool": 40, "sft": 120, "pretrain": 300}
    again = generate_splits(SMALL)
    assert [p.model_dump() for p in again["test"]] == [p.model_dump() for p in splits["test"]]
    other = generate_splits(SMALL.model_copy(update={"seed": 8}))
    assert [p.question for p in other["test"]] != [p.question for p in splits["test"]]


def test_generate_split_matches_generate_splits(splits):
    assert generate_split(SMALL, "pool") == splits["pool"]
    with pytest.raises(ValueError, match="unknown synthetic split"):
        generate_split(SMALL, "train")


def test_a_pinned_pretraining_seed_keeps_the_corpus_and_moves_the_rest(splits):
    """data.synthetic.pretrain_seed: the pretraining split is the pinned seed's whatever the seed is; every
    other split is the seed's own; the splits stay disjoint; pinning the seed itself changes nothing."""
    assert generate_splits(SMALL.model_copy(update={"pretrain_seed": 7})) == splits
    other = generate_splits(SMALL.model_copy(update={"seed": 8}))
    pinned = generate_splits(SMALL.model_copy(update={"seed": 8, "pretrain_seed": 7}))
    assert pinned["pretrain"] == splits["pretrain"]
    assert all(pinned[name] == other[name] for name in ("test", "pool", "sft"))
    assert pinned["test"] != splits["test"]
    where = {p.question: name for name, problems in pinned.items() for p in problems}
    assert len(where) == sum(len(v) for v in pinned.values())  # no question in two splits
    assert generate_splits(SMALL.model_copy(update={"seed": 8, "pretrain_seed": 7}), ["test"]) == {"test": other["test"]}
    assert generate_split(SMALL.model_copy(update={"seed": 8, "pretrain_seed": 7}), "pretrain") == splits["pretrain"]


def test_splits_are_disjoint_and_follow_the_hash(splits):
    seen: dict[str, str] = {}
    for name, problems in splits.items():
        for p in problems:
            assert p.split == name and p.source == "synthetic"
            assert split_of(p.question, SMALL) == name
            assert p.question not in seen, f"{p.question!r} in {seen.get(p.question)} and {name}"
            seen[p.question] = name
    # a bigger pretraining split does not move test problems into another split
    assert all(split_of(p.question, SMALL) == "test" for p in splits["test"])


def test_every_annotation_checks_out_and_meta_matches(splits):
    for p in [q for name in SPLITS for q in splits[name]]:
        calcs = ANNOT.findall(p.solution)
        assert calcs, p.solution
        for a, op, b, r, shown in calcs:
            assert r == shown and check_calc(a, op, b, r), (p.id, a, op, b, r)
            if op == "/":
                assert int(a) % int(b) == 0
        assert p.meta["n_steps"] == len(calcs) == len(p.meta["values"]) == len(p.meta["ops"])
        assert [[int(a), op, int(b), int(r)] for a, op, b, r, _ in calcs] == p.meta["calcs"]
        assert p.meta["values"] == [int(r) for *_, r, _ in calcs]
        assert p.solution.endswith(f"#### {p.answer}")
        assert p.answer == str(p.meta["values"][-1])
        assert all(0 <= v <= SMALL.max_value for v in p.meta["values"])
        assert SMALL.min_steps <= p.meta["n_steps"] <= SMALL.max_steps


def test_variety(splits):
    problems = splits["pretrain"]
    assert len(Counter(p.meta["scenario"] for p in problems)) >= 10
    assert len({p.question.split()[0] for p in problems}) >= 15  # names / openings
    ops = Counter(op for p in problems for op in p.meta["ops"])
    assert all(ops[o] > 10 for o in "+-*/"), ops
    assert set(Counter(p.meta["n_steps"] for p in problems)) == {2, 3, 4, 5}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_generate_problem_has_exact_step_count(n):
    rng = random.Random(n)
    for _ in range(50):
        g = generate_problem(rng, n, max_value=120)
        assert g.meta["n_steps"] == n and max(g.meta["values"]) <= 120


def test_step_weights_steer_the_mix():
    cfg = SyntheticConfig(seed=1, n_pretrain=200, n_sft=0, n_pool=0, n_test=0, step_weights={4: 3.0, 2: 1.0})
    mix = Counter(p.meta["n_steps"] for p in generate_split(cfg, "pretrain"))
    assert set(mix) == {2, 4} and mix[4] > 2 * mix[2]
    with pytest.raises(ValueError, match="no weight"):
        generate_split(cfg.model_copy(update={"step_weights": {1: 1.0}}), "pretrain")


def test_pretrain_documents_are_chatml(splits):
    docs = pretrain_documents(splits["sft"][:20], "Please reason step by step.", seed=0)
    for doc, p in zip(docs, splits["sft"][:20], strict=True):
        assert doc.startswith("<|im_start|>user\n" + p.question)
        assert "Please reason step by step.<|im_end|>\n<|im_start|>assistant\n" in doc
        assert doc.endswith(p.solution + "<|im_end|>\n")


# --- structural traps --------------------------------------------------------------------------------

TRAPS = TrapConfig(distractor=0.4, conversion=0.3, comparison=0.3, difference=0.3, backward=0.3, bystander=0.4)
TRAPPED = SMALL.model_copy(update={"max_value": 100, "traps": TRAPS, "round_share": 0.5})


@pytest.fixture(scope="module")
def trapped():
    return [p for ps in generate_splits(TRAPPED).values() for p in ps]


def test_default_traps_leave_the_problems_unchanged(splits):
    """The generator before traps existed drew exactly these problems (pinned), and a trap share of 0
    draws nothing from the stream."""
    digest = hashlib.sha256("\n".join(p.question + p.solution for p in splits["test"]).encode()).hexdigest()
    assert digest[:16] == "5b7cb62b490dce68"  # computed with the generator of commit 73d2a88
    off = SMALL.model_copy(update={"traps": TrapConfig(distractor=0, conversion=0, difference=0, backward=0)})
    assert generate_splits(off)["test"] == splits["test"]


def test_trapped_problems_keep_exact_arithmetic_and_bounds(trapped):
    kinds = Counter(t["type"] for p in trapped for t in p.meta["traps"])
    assert set(kinds) == set(TRAP_KINDS) and min(kinds.values()) >= 20, kinds
    for p in trapped:
        calcs = ANNOT.findall(p.solution)
        assert [[int(a), op, int(b), int(r)] for a, op, b, r, _ in calcs] == p.meta["calcs"]
        assert all(r == shown and check_calc(a, op, b, r) for a, op, b, r, shown in calcs), p.solution
        assert p.answer == str(p.meta["values"][-1]) and p.solution.endswith(f"#### {p.answer}")
        assert TRAPPED.min_steps <= p.meta["n_steps"] <= TRAPPED.max_steps
        assert all(0 <= v <= 100 for v in p.meta["values"]), p.meta
        for t in p.meta["traps"]:
            assert p.answer not in t["wrong"]


def test_a_distractor_is_irrelevant_and_unique(trapped):
    with_d = [p for p in trapped if any(t["type"] == "distractor" for t in p.meta["traps"])]
    assert with_d
    for p in with_d:
        d = next(t["value"] for t in p.meta["traps"] if t["type"] == "distractor")
        assert re.findall(r"\d+", p.question).count(str(d)) == 1  # stated once, used nowhere else
        assert all(d not in (a, b) for a, _, b, _ in p.meta["calcs"])
        assert str(int(p.answer) + d) in next(t["wrong"] for t in p.meta["traps"] if t["type"] == "distractor")


def test_a_bystander_reads_like_a_step_but_belongs_to_someone_else(trapped):
    """The bystander's sentence has the form of the protagonist's own steps, another name and the other
    pronoun (so every "she"/"he" stays the protagonist's), and a number used nowhere else; counting it gives
    the recorded wrong answer, and a stated calculation with that number is typed ``bystander``."""
    from tasks.corpus.synthetic import NAMES

    pron = dict(NAMES)
    with_b = [p for p in trapped if any(t["type"] == "bystander" for t in p.meta["traps"])]
    assert len(with_b) >= 20
    recorded = 0
    for p in with_b:
        trap = next(t for t in p.meta["traps"] if t["type"] == "bystander")
        d = trap["value"]
        sentence = next(x for x in re.split(r"(?<=[.?]) ", p.question) if re.search(rf"\b{d}\b", x))
        who = next(n for n in pron if re.search(rf"\b{n}\b", sentence))
        hero = p.question.split()[0] if p.question.split()[0] in pron else re.search(r"in (\w+)'s", p.question).group(1)
        assert who != hero and pron[who] != pron[hero], (p.question, who, hero)
        assert re.findall(r"\d+", p.question).count(str(d)) == 1
        assert all(d not in (a, b) for a, _, b, _ in p.meta["calcs"])
        stated = [(Fraction(a), op, Fraction(b), Fraction(r)) for a, op, b, r in p.meta["calcs"]]
        counted = stated + [(Fraction(p.answer), "+", Fraction(d), Fraction(int(p.answer) + d))]
        assert known_error(p.meta, p.answer, str(int(p.answer) + d + 1000), counted) == "bystander"
        if trap["wrong"]:  # every step +/-: the wrong answer is the right one moved by d
            recorded += 1
            assert abs(int(trap["wrong"][0]) - int(p.answer)) == d
    assert recorded >= 5


def test_round_share_makes_amounts_multiples_of_five():
    def share(round_share):
        cfg = SMALL.model_copy(update={"round_share": round_share, "max_value": 100})
        amounts = [b for p in generate_splits(cfg)["pretrain"] for _, op, b, _ in p.meta["calcs"] if op in "+-"]
        return sum(b % 5 == 0 for b in amounts) / len(amounts)

    assert share(0.0) < 0.3 < 0.5 < share(0.6)


def test_backward_problems_undo_the_story():
    rng = random.Random(3)
    for _ in range(40):
        g = generate_problem(rng, 3, 100, TrapConfig(backward=1.0))
        assert g.meta["structure"] == "backward" and "at the start" in g.question or "start with?" in g.question
        end = int(re.search(r"Now \w+ has (\d+)", g.question).group(1))
        assert g.meta["calcs"][0][0] == end  # the solution starts from the end count
        trap = g.meta["traps"][0]
        assert trap["type"] == "backward"


def test_known_error_types_each_trap_and_slip(trapped):
    """A solution that falls for a trap is typed by that trap, a false calculation as arithmetic, the
    reference as correct; typing uses the generator's knowledge, not the verifier."""
    seen = Counter()
    for p in trapped:
        stated = [(Fraction(a), op, Fraction(b), Fraction(r)) for a, op, b, r in p.meta["calcs"]]
        assert known_error(p.meta, p.answer, p.answer, stated) == "correct"
        for t in p.meta["traps"]:
            for w in t["wrong"]:
                assert known_error(p.meta, p.answer, w, stated) == t["type"]
                seen[t["type"]] += 1
        slip = [(*c[:3], c[3] + 1) for c in stated[:1]] + stated[1:]
        wrong_value = str(int(p.answer) + 1)
        if not any(wrong_value in t["wrong"] for t in p.meta["traps"]):
            assert known_error(p.meta, p.answer, wrong_value, slip) == "arithmetic"
            assert known_error(p.meta, p.answer, wrong_value, stated) == "other_structural"
    assert known_error({}, "5", None, []) == "no_answer"
    assert set(seen) == set(TRAP_KINDS)
