"""The table-driven answer-equivalence suite (``answer_cases.jsonl``), plain and in wrapped variants.

Each line is ``{"family", "style", "gold", "pred", "equal"}``; every family has equal and not-equal
cases. The variants put a bare answer in ``\\boxed{}``, in "The final answer is $...$." or after
"Answer:" at the end of a solution, and a bare gold in ``$...$``/``\\boxed{}``: the verdict must not change.
``benchmarks/answer_equivalence.py`` prints the same suite against plain math-verify.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from verifier.answers import answers_equal, extract_answer

CASES = [json.loads(x) for x in (Path(__file__).parent / "answer_cases.jsonl").read_text(encoding="utf-8").splitlines()
         if x.strip()]


def _id(i: int, c: dict) -> str:
    return f"{i}-{c['family']}-{'eq' if c['equal'] else 'ne'}"


def test_suite_shape():
    assert len(CASES) >= 150
    per = Counter((c["family"], c["equal"]) for c in CASES)
    for fam in {c["family"] for c in CASES}:
        assert per[(fam, True)] and per[(fam, False)], f"{fam} needs equal and not-equal cases"
    assert {c["style"] for c in CASES} == {"gsm8k", "math"}


@pytest.mark.parametrize("case", CASES, ids=[_id(i, c) for i, c in enumerate(CASES)])
def test_case(case):
    got = answers_equal(case["gold"], case["pred"])
    assert got == case["equal"], (case, extract_answer(case["gold"]), extract_answer(case["pred"]))


def _variants(gold: str, pred: str) -> list[tuple[str, str]]:
    out = []
    if extract_answer(pred) == pred.strip():
        out += [(gold, f"\\boxed{{{pred}}}"), (gold, f"The final answer is ${pred}$."),
                (gold, f"We add 3 and 4 first.\n\nAnswer: ${pred}$")]
    if extract_answer(gold) == gold.strip():
        out += [(f"${gold}$", pred), (f"\\boxed{{{gold}}}", pred)]
    return out


@pytest.mark.parametrize("family", sorted({c["family"] for c in CASES}))
def test_wrapped_variants(family):
    wrong = [(g, p, c["equal"]) for c in CASES if c["family"] == family
             for g, p in _variants(c["gold"], c["pred"]) if answers_equal(g, p) != c["equal"]]
    assert not wrong, wrong
