"""The ``sweep`` flow: DPO settings over a grid, each point read on the validation split.

For every grid point the pipeline runs up to evaluation with the point's overrides; data, base, SFT,
sampling, verification (and pairs, unless the grid varies ``pairs.*``) have the same keys at every point
and come from the cache, so a point costs one DPO run and one evaluation per arm. Evaluation is limited to
the validation set (``evaluate.datasets``), so a sweep never produces a test-set number to choose by.
The table (``tasks.analysis.sweep``) goes to ``<artifacts>/sweep/<id>/sweep.{md,json}``, to MLflow and, with
``--publish``, to a results page::

    .venv/bin/python -m flows.sweep -c conf/tiny.yaml --grid dpo.learning_rate=5e-5,2e-4 \\
        --grid dpo.beta=0.1,0.5 --strategies weighted,random --publish docs/results/sweep-tiny.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows.pipeline import load_profile, tracked
from tasks.analysis import sweep
from tasks.common.provenance import git_commit
from tasks.corpus.loaders import validation_sets
from tasks.orchestration import plan as dag
from tasks.orchestration import runner

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@flow(name="sweep")
def sweep_flow(profile: str = "conf/tiny.yaml", overrides: list[str] | None = None,
               grid: dict[str, list[str]] | None = None, strategies: list[str] | None = None,
               dataset: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Run every point of ``grid`` (``{"dpo.beta": ["0.1", "0.5"], ...}``) for ``strategies`` and write the
    sweep table; returns its paths, the rows and the best point per arm."""
    sweep.check_grid(grid or {})
    strategies = list(strategies or ["weighted", "random"])
    base = [*(overrides or []), f"orchestration.strategies=[{', '.join(strategies)}]", "evaluate.models=[sft, dpo]"]
    cfg0 = load_profile(profile, base)
    with tracked(cfg0, "sweep", profile, overrides) as tracker:
        data = runner.run_nodes(cfg0, dag.pipeline(cfg0, "data"), tracker)["data"].manifest
        found = validation_sets(data.path, cfg0.data.validation.name)
        if dataset is None:
            if len(found) != 1:
                raise sweep.SweepError(
                    f"validation sets in {data.path / 'eval'}: {found or 'none'}; set data.validation.n > 0 "
                    "(and pick one with --dataset when there are several)")
            dataset = found[0]
        elif dataset not in found:
            raise sweep.SweepError(f"--dataset {dataset!r} is not a validation set of this profile ({found}); "
                                   "a sweep reads the validation split only")
        base.append(f"evaluate.datasets=[{dataset}]")
        rows: list[dict[str, Any]] = []
        sft_metrics: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for point in sweep.points(grid):
            cfg = load_profile(profile, base + sweep.overrides_of(point))
            results = runner.run_nodes(cfg, dag.pipeline(cfg, "evaluate"), tracker)
            sft_metrics = results["evaluate/sft"].manifest.metrics
            for s in strategies:
                dpo = results[f"dpo/{s}"].manifest
                keys[f"{json.dumps(point, sort_keys=True)} {s}"] = dpo.key
                rows.append(sweep.row(point, s, results[f"evaluate/dpo-{s}"].manifest.metrics, sft_metrics,
                                      dpo.metrics, dataset))
        report = {"profile": cfg0.name, "dataset": dataset, "grid": grid, "strategies": strategies,
                  "n": sft_metrics.get(f"{dataset}/n"), "sft_accuracy": sft_metrics.get(f"{dataset}/accuracy"),
                  "rows": rows, "best": sweep.best(rows), "commit": git_commit(), "command": command,
                  "dpo_keys": keys}
        ident = hashlib.sha256(json.dumps([grid, strategies, dataset, sorted(keys.values())]).encode()).hexdigest()[:16]
        out = dag.artifacts_root(cfg0) / "sweep" / ident
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(report, indent=2))
        (out / "sweep.md").write_text(sweep.render_markdown(report), encoding="utf-8")
        if tracker is not None:
            tracker.log_summary({f"best/{arm}/accuracy": r["accuracy"] for arm, r in report["best"].items()})
    return {"report": str(out / "sweep.md"), "report_dir": str(out), "rows": rows, "best": report["best"],
            "mlflow_run_id": getattr(tracker, "parent_id", None)}


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.sweep -c PROFILE --grid KEY=V1,V2 [...] [--strategies weighted,random] [--publish F]``."""
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="conf/tiny.yaml")
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (dpo.* or pairs.*); repeat")
    parser.add_argument("--strategies", default="weighted,random")
    parser.add_argument("--dataset", default=None, help="The validation set (default: the profile's only one).")
    parser.add_argument("--publish", default=None, help="Also write the table to this .md file.")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "-m", "flows.sweep", *(argv if argv is not None else sys.argv[1:])])
    summary = sweep_flow(profile=args.config, overrides=args.override, grid=sweep.parse_grid(args.grid),
                         strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
                         dataset=args.dataset, command=command)
    text = Path(summary["report"]).read_text(encoding="utf-8")
    print(text)
    if args.publish:
        Path(args.publish).write_text(text, encoding="utf-8")
        print(f"published: {args.publish}")
    print(f"artifacts: {summary['report_dir']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
