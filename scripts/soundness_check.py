"""How well each `pairs.soundness` rule finds the truly sound samples, on a synthetic pool.

The synthetic generator knows every true step, so for every answer-correct sample the exact check
(`tasks.evaluation.grading.exact_sound`: each stated calculation holds and lands on a true intermediate value) says
whether it is sound. This script reads a run's sample, verify and data stage folders and prints, for
`first_error` and for `wrongness` at several thresholds, how many answer-correct samples each rule calls
sound, and its precision and recall against the exact check. Precision matters most: a chosen response
that is not sound teaches its wrong step.

    .venv/bin/python scripts/soundness_check.py artifacts/sample/<key> artifacts/verify/<key> artifacts/data/<key>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conf.schema import DimensionWeights  # noqa: E402
from tasks.evaluation.grading import exact_sound  # noqa: E402
from tasks.pairing.pairs import process_wrongness, read_verdicts  # noqa: E402
from tasks.verification.verdicts import read_problems, read_samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sample_dir", type=Path)
    ap.add_argument("verify_dir", type=Path)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--thresholds", type=float, nargs="*", default=[0.0, 0.02, 0.05, 0.1, 0.2])
    args = ap.parse_args()
    problems = read_problems(args.data_dir)
    samples = {(s.problem_id, s.index): s for s in read_samples(args.sample_dir)}
    rows = []
    for v in read_verdicts(args.verify_dir / "verdicts.jsonl"):
        s = samples.get((v.problem_id, v.index))
        if s is None or not v.correct or v.degenerate is not None:
            continue
        truth = exact_sound(s.text, problems[v.problem_id])
        if truth is None:
            continue
        rows.append((truth, v.first_error_step is None, process_wrongness(v.dims, DimensionWeights())))
    if not rows:
        sys.exit("no answer-correct synthetic samples with a known truth")
    n_true = sum(t for t, _, _ in rows)
    print(f"answer-correct, non-degenerate samples: {len(rows)}; exactly sound: {n_true} "
          f"({n_true / len(rows):.1%}); lucky (right answer, a wrong step): {len(rows) - n_true}")
    print(f"\n{'rule':<24}{'called sound':>13}{'precision':>11}{'recall':>8}")
    rules = [("answer only", [True] * len(rows)), ("first_error (default)", [f for _, f, _ in rows])]
    rules += [(f"wrongness <= {t:g}", [w <= t for _, _, w in rows]) for t in args.thresholds]
    for name, called in rules:
        k = sum(called)
        hit = sum(c and t for c, (t, _, _) in zip(called, rows, strict=True))
        prec = hit / k if k else float("nan")
        rec = hit / n_true if n_true else float("nan")
        print(f"{name:<24}{k:>13}{prec:>11.1%}{rec:>8.1%}")


if __name__ == "__main__":
    main()
