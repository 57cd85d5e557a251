"""Hostile inputs: every one gets a verdict within the budget, raises nothing and creates no file."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from conf.schema import VerifyConfig
from verifier import MathVerifier, answers_equal, extract_answer, similarity, split_steps

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


@pytest.mark.parametrize("text", list(FUZZ.values()), ids=list(FUZZ))
def test_fuzz_score(text, no_new_files):
    budget = 2.0
    v = MathVerifier(VerifyConfig(time_budget_s=budget))
    t0 = time.perf_counter()
    verdict = v.score("What is 3 + 4?", text, "7")
    elapsed = time.perf_counter() - t0
    assert elapsed < budget + 1.0  # first-call imports of math-verify are included
    assert verdict.status in ("ok", "unparsed", "timeout", "error")
    assert all(0.0 <= x <= 1.0 for x in verdict.dims.values())
    assert 0.0 <= verdict.wrongness <= 1.0 and 0.0 <= verdict.absurdity <= 1.0
    if text.strip() in ("", "__import__('os').system('touch PWNED')"):
        assert not verdict.correct
    # the other entry points must not raise either
    answers_equal(text, "7")
    answers_equal("7", text)
    extract_answer(text)
    split_steps(text)
    similarity(text, "3 + 4 = 7")
    v.score(text, ["3 + 4 = 7", text[:1000]], text[:1000])


def test_unicode_digits_are_digits():
    assert MathVerifier().score("What is 3 + 4?", FUZZ["unicode digits"], "7").correct


def test_non_string_inputs_get_a_verdict():
    v = MathVerifier()
    assert v.score(None, None, None).status in ("unparsed", "error")  # type: ignore[arg-type]
    assert v.score("q", [1, 2, 3], 5).status in ("ok", "unparsed", "error")  # type: ignore[arg-type]
