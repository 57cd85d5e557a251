"""Check the first-error rules of ``verifier.core._first_error`` on PRM800K phase-1 TRAIN complete solutions.

A seeded sample of rated rows whose candidate states a final answer (the chosen prefix + the candidate, as in
``scripts/fit_step_scorer.py``), with the MATH train gold answer and reference solution. Prints, for solutions
with a right and with a wrong final answer: how many have a step rated -1, and the first-error agreement
(ProcessBench-style: the exact step on erroneous ones, none on the others) of the verifier as it is, scored
without and with the reference, and with a MATH (LaTeX) reference's values used to locate errors as a
stepwise one's are (what ``_stepwise_reference`` rules out). docs/verifier.md quotes the output::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/first_error_rules.py [--data ../shared/data] [--n 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_step_scorer as fit  # noqa: E402

import verifier.core as core  # noqa: E402
from conf.schema import VerifyConfig  # noqa: E402
from verifier.answers import answer_candidates  # noqa: E402
from verifier.report import first_error_metrics  # noqa: E402


def complete_rows(data: Path, n: int, seed: int) -> tuple[list[dict], dict, dict, dict]:
    rows, golds = fit.read_rows(data, None, seed)
    refs = {}
    for line in (data / "math" / "train.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        refs[fit.problem_key(r["problem"])] = r["solution"]
    rating = {(r["instruction"], tuple(r["responses"]), r["next_response"]): r["rating"] for r in rows}
    done = [r for r in rows if answer_candidates(fit.candidate_steps(r)[-1]) and golds.get(fit.problem_key(r["instruction"]))]
    random.Random(seed).shuffle(done)
    return done[:n], golds, refs, rating


def evaluate(rows, golds, refs, rating, use_reference: bool) -> dict[str, dict]:
    v = core.MathVerifier(VerifyConfig(embedding_model=None))
    pred: dict[str, list] = {"right": [], "wrong": []}
    gold: dict[str, list] = {"right": [], "wrong": []}
    for r in rows:
        steps, key = fit.candidate_steps(r), fit.problem_key(r["instruction"])
        a = v.analyze(r["instruction"], steps, golds[key], refs.get(key) if use_reference else None)
        prefix = [rating.get((r["instruction"], tuple(r["responses"][:j]), s)) for j, s in enumerate(r["responses"])]
        first = next((j for j, x in enumerate(prefix) if x == -1), len(steps) - 1 if r["rating"] == -1 else None)
        side = "right" if a.correct else "wrong"
        pred[side].append(a.first_error_step)
        gold[side].append(first)
    out = {k: first_error_metrics(pred[k], gold[k]) for k in pred}
    out["all"] = first_error_metrics(pred["right"] + pred["wrong"], gold["right"] + gold["wrong"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows, golds, refs, rating = complete_rows(Path(a.data), a.n, a.seed)
    runs = {"as is, no reference": False, "as is, MATH reference": True}
    results = {name: evaluate(rows, golds, refs, rating, ref) for name, ref in runs.items()}
    core._stepwise_reference = lambda reference: True  # noqa: ARG005 - the rule's alternative, for comparison
    results["MATH reference's values used"] = evaluate(rows, golds, refs, rating, True)
    print(f"{len(rows)} PRM800K phase-1 train complete solutions (seed {a.seed})\n")
    print("| run | answer | n | with a -1 step | exact first step (erroneous) | none named (others) | ProcessBench F1 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, res in results.items():
        for side in ("right", "wrong", "all"):
            m = res[side]
            print(f"| {name} | {side} | {m['n']} | {m['n_gold_error']} | {m['accuracy_erroneous']} | "
                  f"{m['accuracy_correct']} | {m['f1_processbench']} |")


if __name__ == "__main__":
    main()
