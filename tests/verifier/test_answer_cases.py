"""The table-driven answer-equivalence suites (``answer_cases*.jsonl``), plain and in wrapped variants.

Each line is ``{"family", "style", "gold", "pred", "equal"}`` (``answer_cases_graders.jsonl``, cases taken
from other graders' public test suites, adds the ``"source"`` they came from); in every file every family
has equal and not-equal cases. A case marked ``"known_miss": true`` is one ``answers_equal`` gets wrong
today (it stays in the suite and in the report's agreement; the test expects the miss, strictly, so a fix
shows). The variants put a bare answer in ``\\boxed{}``, in "The final answer is $...$." or after
"Answer:" at the end of a solution, and a bare gold in ``$...$``/``\\boxed{}``: the verdict must not change.
``benchmarks/answer_equivalence.py`` prints the same suite against plain math-verify.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from verifier.answers import answers_equal, extract_answer

FILES = sorted(Path(__file__).parent.glob("answer_cases*.jsonl"))
SUITES = {f.name: [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()] for f in FILES}
CASES = [c for cases in SUITES.values() for c in cases]


def _id(i: int, c: dict) -> str:
    return f"{i}-{c['family']}-{'eq' if c['equal'] else 'ne'}"


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_shape(name):
    cases = SUITES[name]
    assert len(cases) >= 150
    per = Counter((c["family"], c["equal"]) for c in cases)
    for fam in {c["family"] for c in cases}:
        assert per[(fam, True)] and per[(fam, False)], f"{name}: {fam} needs equal and not-equal cases"
    assert {c["style"] for c in cases} == {"gsm8k", "math"}
    assert all(c.get("source") for c in cases) or name == "answer_cases.jsonl", "cases from other graders name their source"


def _param(i: int, c: dict):
    marks = [pytest.mark.xfail(strict=True, reason="known miss, kept in the suite")] if c.get("known_miss") else []
    return pytest.param(c, id=_id(i, c), marks=marks)


@pytest.mark.parametrize("case", [_param(i, c) for i, c in enumerate(CASES)])
def test_case(case):
    got = answers_equal(case["gold"], case["pred"])
    assert got == case["equal"], (case, extract_answer(case["gold"]), extract_answer(case["pred"]))


def _variants(gold: str, pred: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if gold.rstrip().endswith("\\") or pred.rstrip().endswith("\\"):
        return out  # ``185\`` cannot be wrapped: ``\boxed{185\}`` escapes the closing brace
    if extract_answer(pred) == pred.strip():
        out += [(gold, f"\\boxed{{{pred}}}"), (gold, f"The final answer is ${pred}$."),
                (gold, f"We add 3 and 4 first.\n\nAnswer: ${pred}$")]
    if extract_answer(gold) == gold.strip():
        out += [(f"${gold}$", pred), (f"\\boxed{{{gold}}}", pred)]
    return out


@pytest.mark.parametrize("family", sorted({c["family"] for c in CASES}))
def test_wrapped_variants(family):
    wrong = [(g, p, c["equal"]) for c in CASES if c["family"] == family and not c.get("known_miss")
             for g, p in _variants(c["gold"], c["pred"]) if answers_equal(g, p) != c["equal"]]
    assert not wrong, wrong


# Rewrites of a gold answer that keep its meaning, as models write them.
REWRITES = {
    "no spaces": lambda a: a.replace(" ", ""),
    "dfrac": lambda a: a.replace("\\frac", "\\dfrac"),
    "x =": lambda a: f"x = {a}",
    "boxed": lambda a: f"\\boxed{{{a}}}",
    "answer is": lambda a: f"The answer is ${a}$.",
    "no left/right": lambda a: a.replace("\\left", "").replace("\\right", ""),
    "final answer": lambda a: f"Final Answer: The final answer is ${a}$. I hope it is correct.",
    "display": lambda a: f"So we get\n\\[\n\\boxed{{{a}}}\n\\]",
    "answer tag": lambda a: f"<think>\nworking\n</think>\n<answer>{a}</answer>",
    "bold heading": lambda a: f"We are done.\n\n### Final Answer\n\n$${a}$$",
}


def test_never_worse_than_math_verify_on_rewritten_golds(shared_data):
    """On 100 MATH-500 gold answers (every 5th) and meaning-keeping rewrites of each, ``answers_equal`` says
    equal wherever math-verify does (its reading of the rewrite as a text), and no two different golds are
    equal."""
    from math_verify import parse, verify

    golds = [json.loads(x)["answer"] for x in (shared_data / "math" / "math500.jsonl").read_text().splitlines()][::5]
    lost = []
    for gold in golds:
        for name, rewrite in REWRITES.items():
            pred = rewrite(gold)
            if pred != gold and verify(parse(f"${gold}$"), parse(pred if "$" in pred or "\\boxed" in pred else f"${pred}$")):
                if not answers_equal(gold, pred):
                    lost.append((name, gold, pred))
    assert not lost, lost
    same = [(a, b) for a, b in zip(golds, golds[1:] + golds[:1], strict=True) if a != b and answers_equal(a, b)]
    assert not same, same
