"""Correct GSM8K train references, as written and rewritten the way chat models write, that the verifier
gives a first erroneous step: a probe for false flags on correct solutions, to be read by hand.

Each sampled reference is scored in four forms, all with its own (correct) final answer:
- ``source``: as GSM8K writes it (``<<a*b=c>>`` calculator marks, ``#### n``);
- ``plain``: without the calculator marks, ending "The answer is n.";
- ``markdown``: ``**Step k:**`` labels, each calculation again as a display (``\\[ a \\times b = c \\]``, from its
  calculator mark), ending "Therefore, the final answer is $\\boxed{n}$.";
- ``inline``: numbered lines whose calculations are ``\\( a \\times b = c \\)``, ending ``#### n``.

It prints the count per form and, with ``--show``, every flagged solution with the verifier's notes. Some
flags are right: GSM8K's references hold typos (``10 x .5 = 10``, ``14*20 = 140``). Uses the train split
only. Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/false_flag_probe.py [--data ../shared/data] [--n 1000]
        [--seed 7] [--show]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier.core import MathVerifier  # noqa: E402

_ANN_RE = re.compile(r"<<([^<>]*)=([^<>]*)>>")
# a written calculation ending in its calculator mark and result: "$20*6=$<<20*6=120>>120"
_WRITTEN_RE = re.compile(r"\$?[\d.,]+(?:\s*[-+*/x]\s*\$?[\d.,]+)+\s*=\s*\$?<<([^<>]*)=([^<>]*)>>[\d.,]+")


def _latex(expr: str) -> str:
    return expr.replace("*", r" \times ").replace("/", r" \div ")


def forms(reference: str) -> dict[str, str]:
    """The four forms of one GSM8K reference (module docstring)."""
    body, answer = reference.rsplit("####", 1)
    answer = answer.strip()
    lines = [ln for ln in body.strip().split("\n") if ln.strip()]
    steps = []
    for k, ln in enumerate(lines, 1):
        m = _ANN_RE.search(ln)
        prose = _ANN_RE.sub("", ln)
        steps.append(f"**Step {k}:** {prose}" + (f"\n\\[\n{_latex(m.group(1))} = {m.group(2)}\n\\]" if m else ""))
    inline = [_ANN_RE.sub("", _WRITTEN_RE.sub(lambda m: f"\\({_latex(m.group(1))} = {m.group(2)}\\)", ln))
              for ln in lines]
    return {
        "source": reference,
        "plain": "\n".join(_ANN_RE.sub("", ln) for ln in lines) + f"\nThe answer is {answer}.",
        "markdown": "To solve this problem, let's go step by step.\n\n" + "\n\n".join(steps)
                    + f"\n\nTherefore, the final answer is $\\boxed{{{answer}}}$.",
        "inline": "\n".join(f"{i}. {x}" for i, x in enumerate(inline, 1)) + f"\n\n#### {answer}",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--show", action="store_true", help="print every flagged solution with its notes")
    args = ap.parse_args(argv)
    rows = [json.loads(x) for x in (args.data / "gsm8k" / "train.jsonl").open(encoding="utf-8")]
    rows = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    verifier = MathVerifier()
    counts: dict[str, list[int]] = {}
    for r in rows:
        gold = r["answer"].rsplit("####", 1)[1].strip()
        for name, text in forms(r["answer"]).items():
            v = verifier.score(r["question"], text, gold)
            c = counts.setdefault(name, [0, 0, 0])
            c[0] += 1
            c[1] += v.first_error_step is not None
            c[2] += not v.correct
            if args.show and (v.first_error_step is not None or not v.correct):
                print("=" * 72, name, "\n" + r["question"], "\n--\n" + text)
                print(f"-> first error {v.first_error_step}, correct {v.correct}:", "; ".join(v.notes[:4]))
    print("| form | n | given a first error | judged incorrect |\n| --- | ---: | ---: | ---: |")
    for name, (n, flagged, wrong) in counts.items():
        print(f"| {name} | {n} | {flagged} ({flagged / n:.1%}) | {wrong} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
