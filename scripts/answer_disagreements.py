"""Where ``answers_equal`` and math-verify disagree on real model outputs: PRM800K phase 1's final answers.

Reads the distinct (gold, final answer) pairs of ``<data>/prm800k/phase1_train_plus.stepwise.jsonl.gz`` and
``phase1_test.stepwise.jsonl`` (gold answers from MATH train and MATH-500, matched on the problem text with
its whitespace normalised), compares each with ``answers_equal`` and with math-verify alone (both answers in
``$...$``, gold first), and prints the count and every disagreement, to be read by hand: neither side is
ground truth. Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/answer_disagreements.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier.answers import answers_equal  # noqa: E402


def _key(text: str) -> str:
    return " ".join(text.split())


def pairs(data: Path) -> list[tuple[str, str]]:
    golds = {}
    for name in ("train.jsonl", "math500.jsonl"):
        for line in (data / "math" / name).open(encoding="utf-8"):
            r = json.loads(line)
            golds[_key(r["problem"])] = r["answer"]
    out: dict[tuple[str, str], None] = {}
    prm = data / "prm800k"
    for path in (prm / "phase1_train_plus.stepwise.jsonl.gz", prm / "phase1_test.stepwise.jsonl"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                gold = golds.get(_key(r["instruction"]))
                if r.get("answer") and gold is not None:
                    out[(gold, r["answer"])] = None
    return list(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    from math_verify import parse, verify

    todo = pairs(args.data)
    found = []
    for gold, answer in todo:
        ours = answers_equal(gold, answer)
        try:
            mv = verify(parse(f"${gold}$"), parse(f"${answer}$"))
        except Exception:  # noqa: BLE001 - math-verify failing is "no verdict"
            mv = None
        if ours != mv:
            found.append((gold, answer, ours, mv))
    print(f"{len(todo)} distinct (gold, answer) pairs; answers_equal and math-verify disagree on {len(found)}")
    print("| gold | answer | answers_equal | math-verify |\n| --- | --- | --- | --- |")
    for gold, answer, ours, mv in found:
        print(f"| `{gold}` | `{answer}` | {ours} | {mv} |")


if __name__ == "__main__":
    main()
