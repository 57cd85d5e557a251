"""Grading model outputs against gold answers, and per-dataset summaries.

The headline grader is the verifier's: ``extract_answer(output)`` then ``answers_equal(gold, answer)``
(math-verify underneath). For GSM8K-format data the two lm-evaluation-harness graders run beside it,
so that extraction artefacts show up as disagreements instead of hiding in one number:

* ``strict-match``: the first ``#### (\\-?[0-9\\.\\,]+)`` in the output;
* ``flexible-extract``: the *last* match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` anywhere in the output;

both compared by the harness's ``exact_match`` (case-insensitive, after deleting ``,``, ``$``,
everything up to ``#### `` and one trailing ``.``), so ``18.00`` does not equal ``18`` there.

An output counts as wrong, whatever its answer, when it is empty or was cut at ``max_tokens``
(``finish_reason == "length"``); the reason is recorded (``empty | truncated | no_answer | wrong``).
Beside answer accuracy, *sound accuracy*: the share of outputs whose final answer is right **and** whose
steps are right. On synthetic problems the generator knows every true step (``meta.calcs``), so it is
exact (:func:`exact_sound`): every calculation ``a op b = r`` the output states must hold exactly, and
``r`` must be one of the problem's true intermediate values. Elsewhere the verifier judges it (no
erroneous step found, ``first_error_step`` is null), and the record says which (``sound_method``).

One graded record (a line of ``<dataset>.jsonl`` in the evaluate stage)::

    {"id": "gsm8k_test-3", "prompt": "<|im_start|>user\\n...", "output": "... #### 1,234",
     "gold": "1234", "extracted": "1,234", "answer_matches": true, "correct": true,
     "reason_if_wrong": null, "finish_reason": "stop", "n_tokens": 87,
     "strict": "1,234", "strict_correct": true, "flexible": "1,234", "flexible_correct": true,
     "sound": true, "sound_method": "verifier", "first_error_step": null}
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from tasks.common.records import Problem, Record
from tasks.evaluation.stats import accuracy
from verifier.answers import answers_equal, extract_answer

Reason = Literal["empty", "truncated", "no_answer", "wrong"]
REASONS: tuple[str, ...] = ("empty", "truncated", "no_answer", "wrong")

STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_HARNESS_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def regex_answer(text: str, pattern: re.Pattern[str], group_select: int = 0) -> str | None:
    """lm-evaluation-harness's ``regex`` filter; ``None`` where it would return ``[invalid]``."""
    matches = pattern.findall(text or "")
    if not matches:
        return None
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        if not groups:
            return None
        match = groups[0]
    return match.strip()


def strict_match(text: str) -> str | None:
    """The answer after the first ``#### `` (harness ``strict-match``)."""
    return regex_answer(text, STRICT_RE, 0)


def flexible_extract(text: str) -> str | None:
    """The last number-like token of the output (harness ``flexible-extract``)."""
    return regex_answer(text, FLEXIBLE_RE, -1)


def harness_normalise(s: str) -> str:
    """The harness's ``exact_match`` preprocessing for GSM8K (``regexes_to_ignore`` + ``ignore_case``)."""
    for pattern in _HARNESS_IGNORE:
        s = pattern.sub("", s)
    return s.strip().lower()


def harness_equal(gold: str, pred: str | None) -> bool:
    return pred is not None and harness_normalise(pred) == harness_normalise(gold)


@dataclass(frozen=True)
class Grade:
    extracted: str | None
    answer_matches: bool  # the verifier's equivalence, before the empty/truncated rule
    correct: bool
    reason_if_wrong: Reason | None
    strict: str | None = None
    strict_correct: bool | None = None
    flexible: str | None = None
    flexible_correct: bool | None = None


_OPS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "x": "*", "\\times": "*", "\\cdot": "*",
        "/": "/", "÷": "/", "\\div": "/"}
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
STATED_CALC_RE = re.compile(
    rf"(?<![\w.])({_NUM})\s*(\\times|\\cdot|\\div|[-+*/×÷x−])\s*({_NUM})\s*=\s*(?:<<[^>]*>>)?\s*\$?\s*({_NUM})(?![\d.])")


def _frac(s: str) -> Fraction:
    return Fraction(s.replace(",", ""))


def stated_calculations(text: str) -> list[tuple[Fraction, str, Fraction, Fraction]]:
    """Every ``a op b = r`` with plain numbers the text states, in order (``op`` one of + - * /)."""
    out = []
    for m in STATED_CALC_RE.finditer(text or ""):
        try:
            out.append((_frac(m.group(1)), _OPS[m.group(2)], _frac(m.group(3)), _frac(m.group(4))))
        except (ValueError, ZeroDivisionError, KeyError):
            continue
    return out


def calculation_holds(a: Fraction, op: str, b: Fraction, r: Fraction) -> bool:
    """Whether the stated ``a op b = r`` is exactly true (a division by zero never is)."""
    if op == "/":
        return b != 0 and a / b == r
    return {"+": a + b, "-": a - b, "*": a * b}[op] == r


def exact_sound(output: str, problem: Problem) -> bool | None:
    """Whether every calculation ``output`` states is right: it holds exactly and its result is one of the
    problem's true intermediate values (``meta.values`` of a synthetic problem). None without that truth.

    The final answer is judged separately (sound accuracy needs both)."""
    values = problem.meta.get("values") if isinstance(problem.meta, dict) else None
    if not values:
        return None
    truth = {Fraction(v) for v in values}
    return all(calculation_holds(a, op, b, r) and r in truth for a, op, b, r in stated_calculations(output))


def grade(output: str, gold: str, *, finish_reason: str = "stop", gsm8k: bool = False) -> Grade:
    """Grade one output. ``gsm8k`` adds the two harness graders."""
    text = output or ""
    extracted = extract_answer(text) if text.strip() else None
    # the whole text: answers_equal also handles several boxed answers against one set or tuple (as the verifier)
    matches = extracted is not None and bool(answers_equal(gold, text))
    if not text.strip():
        reason: Reason | None = "empty"
    elif finish_reason == "length":
        reason = "truncated"
    elif extracted is None:
        reason = "no_answer"
    elif not matches:
        reason = "wrong"
    else:
        reason = None
    extra = {}
    if gsm8k:
        strict, flexible = strict_match(text), flexible_extract(text)
        extra = {"strict": strict, "strict_correct": harness_equal(gold, strict),
                 "flexible": flexible, "flexible_correct": harness_equal(gold, flexible)}
    return Grade(extracted=extracted, answer_matches=matches, correct=reason is None,
                 reason_if_wrong=reason, **extra)


class Graded(Record):
    """One evaluated problem, as written to ``<dataset>.jsonl`` by the evaluate stage."""

    id: str
    prompt: str
    output: str
    gold: str
    extracted: str | None
    answer_matches: bool
    correct: bool
    reason_if_wrong: Reason | None
    finish_reason: str
    n_tokens: int
    strict: str | None = None
    strict_correct: bool | None = None
    flexible: str | None = None
    flexible_correct: bool | None = None
    sound: bool | None = None
    sound_method: Literal["exact", "verifier"] | None = None
    first_error_step: int | None = None


def disagreement_kind(r: Graded) -> str | None:
    """``"verifier=1 strict=0 flexible=1"`` when the three graders disagree on ``r``, else ``None``.

    The verifier side is its answer match *before* the empty/truncated rule, so a disagreement is
    always about extraction or equivalence, never about truncation.
    """
    if r.strict_correct is None or r.flexible_correct is None:
        return None
    flags = (r.answer_matches, r.strict_correct, r.flexible_correct)
    if len(set(flags)) == 1:
        return None
    return " ".join(f"{name}={int(f)}" for name, f in zip(("verifier", "strict", "flexible"), flags, strict=True))


def _example(r: Graded, chars: int = 240) -> dict:
    tail = r.output if len(r.output) <= chars else "…" + r.output[-chars:]
    return {"id": r.id, "gold": r.gold, "extracted": r.extracted, "strict": r.strict,
            "flexible": r.flexible, "output_tail": tail}


def summarise(records: Sequence[Graded], *, samples: int = 2000, seed: int = 0, level: float = 0.95,
              n_examples: int = 3) -> dict:
    """Accuracy with its bootstrap CI, wrong-reason counts, and (GSM8K format) the harness graders.

    ``{"n": 200, "accuracy": 0.41, "ci_low": 0.34, "ci_high": 0.48, "correct": 82,
       "reasons": {"empty": 0, "truncated": 5, "no_answer": 12, "wrong": 101},
       "strict_match": 0.39, "flexible_extract": 0.42, "disagreements": 9,
       "disagreement_kinds": {"verifier=1 strict=0 flexible=1": 6, ...},
       "examples": {"verifier=1 strict=0 flexible=1": [{"id": ..., "output_tail": ...}], ...}}``
    """
    est = accuracy([r.correct for r in records], samples=samples, seed=seed, level=level)
    counts = Counter(r.reason_if_wrong for r in records if r.reason_if_wrong is not None)
    out: dict = {"n": est.n, "accuracy": est.mean, "ci_low": est.low, "ci_high": est.high,
                 "correct": sum(r.correct for r in records),
                 "reasons": {k: counts.get(k, 0) for k in REASONS}}
    judged = [r for r in records if r.sound is not None]
    if judged and len(judged) == len(records):
        s = accuracy([bool(r.sound) for r in records], samples=samples, seed=seed, level=level)
        methods = sorted({r.sound_method for r in records if r.sound_method})
        out.update({"sound_accuracy": s.mean, "sound_ci_low": s.low, "sound_ci_high": s.high,
                    "sound_correct": sum(bool(r.sound) for r in records),
                    "unsound_correct": sum(r.correct and not r.sound for r in records),
                    "sound_method": ",".join(methods)})
    harness = [r for r in records if r.strict_correct is not None]
    if harness:
        kinds: Counter[str] = Counter()
        examples: dict[str, list[dict]] = {}
        for r in harness:
            kind = disagreement_kind(r)
            if kind is None:
                continue
            kinds[kind] += 1
            if len(examples.setdefault(kind, [])) < n_examples:
                examples[kind].append(_example(r))
        out.update({
            "strict_match": sum(bool(r.strict_correct) for r in harness) / len(harness),
            "flexible_extract": sum(bool(r.flexible_correct) for r in harness) / len(harness),
            "disagreements": sum(kinds.values()),
            "disagreement_kinds": dict(sorted(kinds.items())),
            "examples": dict(sorted(examples.items())),
        })
    return out


__all__ = ["FLEXIBLE_RE", "REASONS", "STRICT_RE", "Grade", "Graded", "Reason", "calculation_holds", "disagreement_kind",
           "exact_sound", "flexible_extract", "grade", "harness_equal", "harness_normalise", "regex_answer",
           "stated_calculations", "strict_match", "summarise"]
