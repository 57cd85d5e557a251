"""Answer equivalence: ``verifier.answers.answers_equal`` against plain math-verify on a labelled suite.

The suite is ``tests/verifier/answer_cases.jsonl`` (one ``{"family", "style", "gold", "pred", "equal"}``
object a line, written for this project: GSM8K- and MATH-style answers, equal and not-equal cases for
every family). Plain math-verify is ``verify(parse(gold), parse(pred))`` with its defaults, gold first.
A third column wraps bare answers in ``$...$`` before math-verify (how its LaTeX extraction expects
them), for reference. Prints the agreement with the labels overall and per family, the cases where
answers_equal and plain math-verify differ, and the throughput in comparisons/s: the first pass over
the suite (imports done, caches cold) and ``--repeat`` further passes (answers_equal's parse caches warm). Usage::

    python benchmarks/answer_equivalence.py [--cases tests/verifier/answer_cases.jsonl] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from verifier.answers import answers_equal

CASES = Path(__file__).resolve().parents[1] / "tests" / "verifier" / "answer_cases.jsonl"


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def plain_math_verify(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(gold), parse(pred)))
    except Exception:  # noqa: BLE001 - a crash is a "not equal" verdict for the baseline
        return False


def wrapped_math_verify(gold: str, pred: str) -> bool:
    """math-verify with a bare answer put in ``$...$`` first (how its LaTeX extraction expects it)."""
    def wrap(s: str) -> str:
        return s if "$" in s or "\\boxed" in s or "\n" in s else f"${s}$"

    return plain_math_verify(wrap(gold), wrap(pred))


def run(cases: list[dict], repeat: int = 1) -> dict:
    graders = {"answers_equal": answers_equal, "math-verify": plain_math_verify,
               "math-verify ($-wrapped)": wrapped_math_verify}
    verdicts: dict[str, list[bool]] = {}
    rate: dict[str, float] = {}
    for name, fn in graders.items():
        fn("\\frac{7}{9}", "\\boxed{x \\geq 0.25}")  # imports, outside the timing
        t = time.perf_counter()
        verdicts[name] = [bool(fn(c["gold"], c["pred"])) for c in cases]  # first pass: cold caches
        rate[name] = len(cases) / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(repeat):
            for c in cases:
                fn(c["gold"], c["pred"])
        rate[name + " (cached)"] = repeat * len(cases) / (time.perf_counter() - t)
    fams: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        fams[c["family"]].append(i)
    return {"verdicts": verdicts, "rate": rate, "families": dict(fams)}


def _agree(verdicts: list[bool], cases: list[dict], idx: list[int]) -> float:
    return sum(verdicts[i] == cases[i]["equal"] for i in idx) / len(idx) if idx else 0.0


def report(cases: list[dict], res: dict) -> str:
    v, fams = res["verdicts"], res["families"]
    ae, mv = v["answers_equal"], v["math-verify"]
    everything = list(range(len(cases)))
    lines = [
        f"{len(cases)} cases ({sum(c['equal'] for c in cases)} equal, {sum(not c['equal'] for c in cases)} not equal)",
        "",
        "| family | n | answers_equal | math-verify | math-verify ($-wrapped) |",
        "|---|---:|---:|---:|---:|",
    ]
    mw = v["math-verify ($-wrapped)"]
    for fam, idx in sorted(fams.items()):
        lines.append(f"| {fam} | {len(idx)} | {_agree(ae, cases, idx):.3f} | {_agree(mv, cases, idx):.3f} | "
                     f"{_agree(mw, cases, idx):.3f} |")
    lines.append(f"| **all** | {len(cases)} | **{_agree(ae, cases, everything):.3f}** | "
                 f"**{_agree(mv, cases, everything):.3f}** | **{_agree(mw, cases, everything):.3f}** |")
    wins = [i for i in everything if ae[i] == cases[i]["equal"] != mv[i]]
    losses = [i for i in everything if mv[i] == cases[i]["equal"] != ae[i]]
    both = [i for i in everything if ae[i] != cases[i]["equal"] and mv[i] != cases[i]["equal"]]
    lines += ["", f"answers_equal right, math-verify wrong: {len(wins)}; math-verify right, answers_equal "
              f"wrong: {len(losses)}; both wrong: {len(both)}", ""]
    for title, idx in (("math-verify right, answers_equal wrong", losses), ("both wrong", both),
                       ("answers_equal right, math-verify wrong", wins)):
        if idx:
            lines.append(f"{title}:")
            for i in idx:
                c = cases[i]
                lines.append(f"  [{c['family']}] label={c['equal']!s:5} answers_equal={ae[i]!s:5} "
                             f"math-verify={mv[i]!s:5} gold={c['gold']!r} pred={c['pred']!r}")
            lines.append("")
    lines.append("throughput: " + ", ".join(f"{k} {r:.0f} comparisons/s" for k, r in res["rate"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=Path, default=CASES)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the suite (after one warm-up)")
    args = ap.parse_args(argv)
    cases = load(args.cases)
    print(report(cases, run(cases, args.repeat)))


if __name__ == "__main__":
    main()
