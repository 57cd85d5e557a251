"""Hostile inputs: every one gets the verdict it should (status, correctness) within the budget, raises nothing
and creates no file (nothing in a solution is executed)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from conf.schema import VerifyConfig
from verifier import MathVerifier, answers_equal, extract_answer, similarity, split_steps

# name -> (text, status of score(question, text, "7"), correct): all of them finish far inside the budget, so
# "timeout" or "error" would be a regression; "unparsed" where nothing can be read as steps and an answer
FUZZ_EXPECTED = {
    "power tower": ("ok", False),
    "power tower with claim": ("ok", False),
    "latex power tower": ("ok", False),
    "nested parentheses": ("unparsed", False),
    "one megabyte": ("ok", False),
    "code injection": ("unparsed", False),
    "code injection boxed": ("ok", False),
    "unicode digits": ("ok", True),
    "nan": ("ok", False),
    "inf": ("ok", False),
    "empty": ("unparsed", False),
    "whitespace": ("unparsed", False),
    "huge factorial": ("ok", False),
    "open boxes": ("unparsed", False),
    "boxes": ("unparsed", False),
    "braces": ("unparsed", False),
    "long number": ("ok", False),
    "division by zero": ("ok", False),
    "null bytes": ("ok", False),
    "lone surrogate-ish": ("ok", True),
    "beyond float, exact": ("ok", False),
    "beyond float, against a decimal": ("ok", False),
    "beyond float, rounded": ("ok", False),
    "beyond float, assigned": ("ok", False),
    "prose after 'answer'": ("ok", True),
}
FUZZ = {
    "power tower": "9**9**9",
    "power tower with claim": "We compute 9**9**9 = 5.\n#### 9**9**9",
    "latex power tower": "$10^{10^{10}} = 1$ so the answer is \\boxed{10^{10^{10}}}",
    "nested parentheses": "(" * 10000 + "1" + ")" * 10000 + " = 1",
    "one megabyte": "1+1=2 " * 175000,
    "code injection": "__import__('os').system('touch PWNED')",
    "code injection boxed": "\\boxed{__import__('os').system('touch PWNED')}",
    "unicode digits": "٣ + ٤ = ٧ so the answer is ٧",
    "nan": "nan = nan. The answer is nan.",
    "inf": "inf - inf = 0, answer: 1e999",
    "empty": "",
    "whitespace": " \n\t ",
    "huge factorial": "\\boxed{100000!}",
    "open boxes": "\\boxed{" * 3000,
    "boxes": "\\boxed{" * 3000 + "}" * 3000,
    "braces": "{" * 20000,
    "long number": "9" * 5000 + " + 1 = 2",
    "division by zero": "1/0 = 5. #### 1/0",
    "null bytes": "\x00\x01\x02 = 3 #### \x00",
    "lone surrogate-ish": "\udcff 3 + 4 = 7",
    # exact values up to 4,000 bits, beyond a float's ~1,024 (a MATH train reference once got an error verdict)
    "beyond float, exact": "$(3^{1001}+4^{1002})^2-(3^{1001}-4^{1002})^2 = 4\\cdot3^{1001}\\cdot4^{1002}$. So $k=\\boxed{16}$.",
    "beyond float, against a decimal": "$3^{2002} \\cdot 0.5 = 1.2$ and $2^{1500}/3^{700} = 5$ and $2^{1100} = 1.5$",
    "beyond float, rounded": "$2^{1200} \\approx 1.7$, to the nearest integer $3^{2002}/2 = 8$. The answer is 8.",
    # a MATH train reference: the unit-tail regex backtracked for 11 s on the sentence after "this answer"
    "prose after 'answer'": (
        "The greatest possible sum for any of these pairs is $3+4=\\boxed{7}$.\n\n(Of course, you could probably "
        "have guess-checked this answer relatively easily, but recognizing the equation as the graph of a circle "
        "is helpful in convincing yourself that there is no greater value of $x+y$ ... or, for example, if you "
        "wanted to find the greatest possible value of $x+y$, which is $5\\sqrt2$)."),
    "beyond float, assigned": "$x = 3^{2000}$, so $x + 0.5 = 2$ and $\\sqrt{3^{2002}} = 3^{1001}$. #### 3^{2000}",
}


@pytest.fixture
def no_new_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tmp = Path(tempfile.gettempdir())
    before = set(os.listdir(tmp))
    yield tmp_path
    assert list(tmp_path.iterdir()) == []
    new = {n for n in set(os.listdir(tmp)) - before if "PWNED" in n}
    assert not new
    assert not Path("PWNED").exists()


@pytest.mark.parametrize("name", list(FUZZ))
def test_fuzz_score(name, no_new_files):
    text = FUZZ[name]
    budget = 2.0
    v = MathVerifier(VerifyConfig(time_budget_s=budget))
    t0 = time.perf_counter()
    verdict = v.score("What is 3 + 4?", text, "7")
    elapsed = time.perf_counter() - t0
    assert elapsed < budget + 1.0  # first-call imports of math-verify are included
    status, correct = FUZZ_EXPECTED[name]
    assert (verdict.status, verdict.correct) == (status, correct), verdict.notes
    assert all(0.0 <= x <= 1.0 for x in verdict.dims.values())
    assert 0.0 <= verdict.wrongness <= 1.0 and 0.0 <= verdict.absurdity <= 1.0
    # the other entry points must not raise either
    answers_equal(text, "7")
    answers_equal("7", text)
    extract_answer(text)
    split_steps(text)
    similarity(text, "3 + 4 = 7")
    t0 = time.perf_counter()
    as_question = v.score(text, ["3 + 4 = 7", text[:1000]], text[:1000])
    assert as_question.status == "ok" and time.perf_counter() - t0 < budget + 1.0, as_question.notes


def test_fuzz_expectations_cover_every_input():
    assert set(FUZZ_EXPECTED) == set(FUZZ)


def test_unicode_digits_are_digits():
    assert MathVerifier().score("What is 3 + 4?", FUZZ["unicode digits"], "7").correct


def test_non_string_inputs_get_a_verdict():
    v = MathVerifier()
    nothing = v.score(None, None, None)  # type: ignore[arg-type]
    assert (nothing.status, nothing.correct, nothing.steps) == ("unparsed", False, [])
    numbers = v.score("q", [1, 2, 3], 5)  # type: ignore[arg-type]  # steps are str()-ed; a non-string gold is none
    assert (numbers.status, numbers.correct, numbers.steps) == ("ok", False, ["1", "2", "3"])
    assert "gold answer missing or empty: correctness cannot be judged" in numbers.notes


def test_fuzz_through_the_worker_pool(no_new_files):
    """The same verdicts from the worker processes, in input order, and no file from them either."""
    items = [{"problem_id": n, "question": "What is 3 + 4?", "solution": t, "gold": "7"} for n, t in FUZZ.items()]
    out = MathVerifier(VerifyConfig(time_budget_s=2.0)).score_batch(items, workers=2, progress=False)
    assert [(o.problem_id, o.status, o.correct) for o in out] == [(n, *FUZZ_EXPECTED[n]) for n in FUZZ]
