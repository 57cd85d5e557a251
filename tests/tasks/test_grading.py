"""Answer extraction and grading on hand-written outputs, and the per-dataset summary."""

from __future__ import annotations

import pytest

from tasks.evaluation.grading import (
    Graded,
    disagreement_kind,
    flexible_extract,
    grade,
    harness_equal,
    harness_normalise,
    strict_match,
    summarise,
)
from verifier.answers import normalize_answer

# ------------------------------------------------------------ lm-evaluation-harness graders


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("48/2 = 24 clips in May.\n#### 1,234", "1,234", "1,234"),
        ("So she has #### -7 left", "-7", "-7"),
        ("#### 5 first, then #### 7", "5", "7"),  # strict takes the first, flexible the last
        ("The answer is 72.", None, "72."),
        ("It costs $1,000.", None, "$1,000."),
        ("Each box: 18.00 dollars", None, "18.00"),
        ("#### 72\n\nQuestion: Tom has 15 apples", "72", "15"),  # answer followed by more text
        ("The answer is \\boxed{\\dfrac{1}{2}}", None, "2"),  # single digits via the second group
        ("I am not sure.", None, None),
        ("", None, None),
    ],
)
def test_strict_and_flexible_extraction(text, strict, flexible):
    assert strict_match(text) == strict
    assert flexible_extract(text) == flexible


@pytest.mark.parametrize(
    ("gold", "pred", "equal"),
    [
        ("1234", "1,234", True),
        ("1000", "$1,000.", True),
        ("72", "72.", True),
        ("18", "18.00", False),  # exact string match after the harness's deletions
        ("-7", "-7", True),
        ("7", "-7", False),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", True),  # a full GSM8K answer as gold
        ("72", None, False),
    ],
)
def test_harness_equal(gold, pred, equal):
    assert harness_equal(gold, pred) is equal


def test_harness_normalise():
    assert harness_normalise("#### $1,000.") == "1000"
    assert harness_normalise("ABC") == "abc"


# ------------------------------------------------------------ headline grader (verifier)


@pytest.mark.parametrize(
    ("output", "gold", "correct"),
    [
        ("She earns 12*50/60 = 10 dollars.\n#### 10", "10", True),
        ("The total is \\boxed{1,000}.", "1000", True),
        ("So the answer is $1,000.\n#### $1,000", "1000", True),
        ("Each costs \\boxed{18.00}", "18", True),
        ("Half of it: \\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", True),
        ("Half of it: \\boxed{\\dfrac{1}{2}}", "0.5", True),
        ("First \\boxed{3}, but on reflection the answer is \\boxed{4}.", "4", True),
        ("The answer is \\boxed{4}. Check: 4 + 4 = 8, so we are done.", "4", True),
        ("#### 1,234", "1234", True),
        ("The temperature drops to \\boxed{-3}", "-3", True),
        ("The temperature drops to \\boxed{3}", "-3", False),
        ("\\boxed{7}", "8", False),
    ],
)
def test_grade_headline(output, gold, correct):
    g = grade(output, gold)
    assert g.correct is correct, g
    assert g.reason_if_wrong == (None if correct else "wrong")
    assert g.strict is None and g.flexible is None  # not GSM8K format


def test_grade_reasons():
    empty = grade("   ", "5", gsm8k=True)
    assert (empty.correct, empty.reason_if_wrong, empty.extracted) == (False, "empty", None)
    assert (empty.strict_correct, empty.flexible_correct) == (False, False)
    cut = grade("so far 2+3 = 5 and \\boxed{5}, then", "5", finish_reason="length")
    assert (cut.answer_matches, cut.correct, cut.reason_if_wrong) == (True, False, "truncated")
    none = grade("I am not sure how to solve this.", "5")
    assert (none.extracted, none.correct, none.reason_if_wrong) == (None, False, "no_answer")
    ok = grade("2+3 = 5\n#### 5", "5", gsm8k=True)
    assert (ok.correct, ok.reason_if_wrong, ok.strict, ok.strict_correct, ok.flexible_correct) == (
        True, None, "5", True, True)


def test_grade_gsm8k_graders_disagree_on_artefacts():
    g = grade("Each box costs \\boxed{18.00}", "18", gsm8k=True)
    assert g.correct and g.strict is None and g.flexible == "18.00"
    assert (g.strict_correct, g.flexible_correct) == (False, False)


# ------------------------------------------------------------ summaries


def _rec(i: int, *, matches: bool, correct: bool, reason, strict: bool | None = None,
         flexible: bool | None = None) -> Graded:
    return Graded(id=f"p{i}", prompt="q", output=f"output {i}", gold="1", extracted="1" if matches else None,
                  answer_matches=matches, correct=correct, reason_if_wrong=reason, finish_reason="stop",
                  n_tokens=3, strict="1" if strict else None, strict_correct=strict,
                  flexible="1" if flexible else None, flexible_correct=flexible)


def test_disagreement_kind():
    assert disagreement_kind(_rec(0, matches=True, correct=True, reason=None, strict=True, flexible=True)) is None
    assert disagreement_kind(_rec(0, matches=True, correct=True, reason=None, strict=False, flexible=True)) == (
        "verifier=1 strict=0 flexible=1")
    assert disagreement_kind(_rec(0, matches=True, correct=True, reason=None)) is None  # not GSM8K


def test_summarise_counts_reasons_and_disagreements():
    recs = [
        _rec(0, matches=True, correct=True, reason=None, strict=True, flexible=True),
        _rec(1, matches=True, correct=True, reason=None, strict=False, flexible=True),
        _rec(2, matches=True, correct=True, reason=None, strict=False, flexible=True),
        _rec(3, matches=True, correct=False, reason="truncated", strict=False, flexible=False),
        _rec(4, matches=False, correct=False, reason="no_answer", strict=False, flexible=True),
        _rec(5, matches=False, correct=False, reason="empty", strict=False, flexible=False),
        _rec(6, matches=False, correct=False, reason="wrong", strict=False, flexible=False),
        _rec(7, matches=False, correct=False, reason="wrong", strict=False, flexible=False),
    ]
    s = summarise(recs, samples=500, seed=0, n_examples=1)
    assert (s["n"], s["correct"], s["accuracy"]) == (8, 3, 3 / 8)
    assert s["ci_low"] <= 3 / 8 <= s["ci_high"]
    assert s["reasons"] == {"empty": 1, "truncated": 1, "no_answer": 1, "wrong": 2}
    assert (s["strict_match"], s["flexible_extract"]) == (1 / 8, 4 / 8)
    assert s["disagreements"] == 4
    assert s["disagreement_kinds"] == {"verifier=0 strict=0 flexible=1": 1, "verifier=1 strict=0 flexible=0": 1,
                                       "verifier=1 strict=0 flexible=1": 2}
    assert [e["id"] for e in s["examples"]["verifier=1 strict=0 flexible=1"]] == ["p1"]
    # non-GSM8K data has no harness graders
    plain = summarise([_rec(0, matches=True, correct=True, reason=None)], samples=10)
    assert "strict_match" not in plain and plain["accuracy"] == 1.0


# ------------------------------------------------------------ real data: reference solutions as outputs


def _jsonl(path, n):
    import json

    with path.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_reference_solutions_grade_correct_and_shifted_golds_do_not(shared_data):
    """GSM8K worked answers pass all three graders; MATH-500 solutions pass the verifier; pairing a
    solution with the next problem's gold passes none (unless the two golds are the same number)."""
    gsm = _jsonl(shared_data / "gsm8k" / "test.jsonl", 300)
    golds = [r["answer"].split("####")[-1].strip() for r in gsm]
    for r, gold in zip(gsm, golds, strict=True):
        g = grade(r["answer"], gold, gsm8k=True)
        assert (g.correct, g.strict_correct, g.flexible_correct) == (True, True, True), (gold, g)
    for i, r in enumerate(gsm):
        other = golds[(i + 1) % len(golds)]
        if other.replace(",", "") != golds[i].replace(",", ""):
            g = grade(r["answer"], other, gsm8k=True)
            assert not (g.correct or g.strict_correct or g.flexible_correct), (golds[i], other)
    math500 = _jsonl(shared_data / "math" / "math500.jsonl", 150)
    for r in math500:
        assert grade(r["solution"], r["answer"]).correct, (r["unique_id"], r["answer"])
    for i, r in enumerate(math500):
        other = math500[(i + 1) % len(math500)]["answer"]
        if normalize_answer(other) != normalize_answer(r["answer"]):
            assert not grade(r["solution"], other).correct, (r["unique_id"], r["answer"], other)
