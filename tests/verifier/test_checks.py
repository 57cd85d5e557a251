"""The checks of verifier.core one by one: each returns (score, flags) from its inputs and mutates none of them."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest

from verifier import core
from verifier.answers import answer_candidates, parse_number
from verifier.arith import extract_calculations
from verifier.steps import split_steps


def calcs_of(steps: list[str]):
    return [extract_calculations(s) for s in steps]


def test_symbolic_scores_the_share_of_wrong_calculations():
    steps = ["She sold 48/2 = 26 clips.", "Then 48 + 26 = 74 clips.", "And 3 * 4 = 12."]
    calcs = calcs_of(steps)
    frozen = copy.deepcopy(calcs)
    score, flags = core._symbolic(calcs)
    assert score == core.SYMBOLIC_FLOOR + core.SYMBOLIC_FLOOR * 1 / 3
    assert [(f.step, f.dim, f.severity) for f in flags] == [(0, "symbolic_validity", core.SEV_WRONG_CALC)]
    assert "is wrong" in flags[0].note
    assert core._symbolic(calcs_of(["3 * 4 = 12."])) == (0.0, [])
    assert [[c.result for c in cs] for cs in calcs] == [[c.result for c in cs] for cs in frozen]


def test_ordering_flags_each_step_that_uses_a_later_value_once():
    steps = ["In total 48 + 24 = 72 clips, and 72 - 24 = 48.", "She sold 48/2 = 24 clips in May.", "#### 72"]
    given = {Fraction(48), Fraction(2)}
    score, flags, unsupported = core._ordering(steps, calcs_of(steps), given, core.implicit_constants(steps[0]))
    assert given == {Fraction(48), Fraction(2)}  # not widened in place
    assert score == core.ORDERING_FIRST
    assert [(f.step, f.severity) for f in flags] == [(0, core.SEV_USED_BEFORE_DERIVED)]
    assert flags[0].note == "step 0 uses 24 before step 1 derives it"
    assert unsupported == []


def test_ordering_returns_operands_without_a_source():
    steps = ["She has 35 + 64 = 99 books.", "#### 99"]
    score, flags, unsupported = core._ordering(steps, calcs_of(steps), {Fraction(35)})
    assert (score, flags) == (0.0, [])
    assert unsupported == [(0, Fraction(64), "unsupported")]
    ref = core.ValueSet([Fraction(64)])  # a reference derives 64: a skipped step, not a sourceless number
    assert core._ordering(steps, calcs_of(steps), {Fraction(35)}, None, ref)[2] == [(0, Fraction(64), "underived")]


def test_sourceless_one_flag_per_step_and_the_skipped_step_wins():
    score, flags = core._sourceless([(1, Fraction(64), "unsupported"), (1, Fraction(5), "unsupported")])
    assert score == core.SOURCELESS_EACH and [(f.step, f.severity) for f in flags] == [(1, core.SEV_SOURCELESS)]
    found = [(3, Fraction(7), "unsupported"), (1, Fraction(8), "unsupported"), (3, Fraction(12), "underived"),
             (4, Fraction(9), "unsupported")]
    score, flags = core._sourceless(found)
    assert score == pytest.approx(min(1.0, core.UNDERIVED_FIRST + core.UNDERIVED_PER_SOURCELESS * 2))
    assert [(f.step, f.severity) for f in flags] == [(1, core.SEV_SOURCELESS), (3, core.SEV_SKIPPED_STEP),
                                                     (4, core.SEV_SOURCELESS)]
    assert "12, which the reference derives" in flags[1].note
    assert core._sourceless([(i, Fraction(100 + i), "unsupported") for i in range(5)])[0] == core.SOURCELESS_MAX
    assert core._sourceless([]) == (0.0, [])


def test_conflicting_answers():
    steps = ["So it is 5.", "#### 5", "The answer is 6."]
    score, flags = core._conflicting_answers(steps, answer_candidates("\n".join(steps)))
    assert score == core.CONFLICTING_ANSWERS
    assert [(f.step, f.severity) for f in flags] == [(2, core.SEV_CONTRADICTION)]
    assert core._conflicting_answers(["#### 5"], answer_candidates("#### 5")) == (0.0, [])


@pytest.mark.parametrize(("final", "score", "severity"), [
    ("70", core.FINAL_CONTRADICTS, core.SEV_CONTRADICTION),  # neither the last nor an earlier value
    ("24", core.FINAL_IS_EARLIER_VALUE, core.SEV_FINAL_IS_EARLIER),  # an intermediate value
    ("72", 0.0, None),
])
def test_final_answer_against_the_last_derived_value(final, score, severity):
    steps = ["She sold 48/2 = 24 clips in May.", "She sold 48+24 = 72 clips in total.", f"#### {final}"]
    got, flags = core._final_vs_derived(steps, calcs_of(steps), parse_number(final), cents=False, rounding=False)
    assert got == score
    assert [f.severity for f in flags] == ([severity] if severity else [])
    if flags:
        assert flags[0].step == 2 and flags[0].note.startswith(f"final answer {final} differs")


def test_final_answer_rounded_or_in_cents_is_fine():
    steps = ["The share is 32 / 96 * 100 = 33.333 percent.", "#### 33"]
    assert core._final_vs_derived(steps, calcs_of(steps), parse_number("33"), False, rounding=True) == (0.0, [])
    assert core._final_vs_derived(steps, calcs_of(steps), parse_number("33"), False, rounding=False)[0] > 0
    steps = ["Each wash costs 24/240 = 0.1 dollars.", "#### 10"]
    assert core._final_vs_derived(steps, calcs_of(steps), parse_number("10"), cents=True, rounding=False) == (0.0, [])


def test_consistency_takes_the_largest_finding_and_keeps_their_order():
    steps = ["She sold 48/2 = 24 clips.", "#### 5", "The answer is 70."]
    cands = answer_candidates("\n".join(steps))
    unsupported = [(0, Fraction(64), "unsupported")]
    score, flags = core._consistency(steps, calcs_of(steps), cands, parse_number("70"), unsupported)
    assert score == core.CONFLICTING_ANSWERS
    assert [f.note.split(" ")[0] for f in flags] == ["conflicting", "step"]
    assert unsupported == [(0, Fraction(64), "unsupported")]
    latex = core._consistency(steps, calcs_of(steps), cands, parse_number("70"), unsupported, latex=True)[1]
    assert [f.note.split(" ")[0] for f in latex] == ["conflicting"]  # sourceless numbers: not in LaTeX
    steps = ["She sold 48/2 = 24 clips.", "#### 70"]
    score, flags = core._consistency(steps, calcs_of(steps), answer_candidates("#### 70"), parse_number("70"),
                                     unsupported)
    assert score == core.FINAL_CONTRADICTS and [f.note.split(" ")[0] for f in flags] == ["final", "step"]


def test_structure():
    assert core._structure([], "", []) == (core.STRUCT_EMPTY, [])
    steps = ["She sold 48/2 = 24 clips in May.", "So in total she sold 48 + 24 = 72 cl"]
    text = "\n".join(steps)
    score, flags = core._structure(steps, text, answer_candidates(text))
    assert score == pytest.approx(core.STRUCT_TRUNCATED + core.STRUCT_EACH_FURTHER)
    assert [f.severity for f in flags] == [core.STRUCT_NO_ANSWER * core.STRUCT_FLAG_WEIGHT,
                                           core.STRUCT_TRUNCATED * core.STRUCT_FLAG_WEIGHT]
    good = split_steps("She sold 48/2 = 24 clips.\n#### 24")
    assert core._structure(good, "\n".join(good), answer_candidates("#### 24")) == (0.0, [])


def test_repetition_and_balance():
    steps = ["Natalia sold 48/2 = 24 clips in May."] * 3 + ["#### 72"]
    found = core._repetition(steps, "\n".join(steps))
    assert [(sev, i) for sev, _, i in found] == [(core.STRUCT_REPETITIVE, 1)]
    assert core._repetition(["short"] * 5, "short\n" * 5) == []  # steps under MIN_REPEAT_CHARS do not count
    assert core._unbalanced("f(x = 3") == ["brackets"]
    assert core._unbalanced("$\\frac{1}{2 = x$") == ["braces"]
    assert core._unbalanced("$\\frac{1}{2} = x") == ["$ delimiters"]
    assert core._unbalanced("\\{1, 2\\} and (a) [b] $5 and $6") == []


def test_split_solution_cuts_at_the_limit_and_says_so():
    assert core._split_solution("1+1=2\n#### 2", 100) == (["1+1=2", "#### 2"], [])
    steps, notes = core._split_solution("x" * 50, 10)
    assert steps == ["x" * 10] and notes == ["solution has 50 characters; checked the first 10"]
    steps, notes = core._split_solution(["aaaa", "  ", "bbbb", "cccc"], 9)
    assert steps == ["aaaa", "bbbb"] and notes == ["solution longer than 9 characters; checked a prefix"]
    assert core._split_solution(None, 10) == ([], [])  # type: ignore[arg-type]
