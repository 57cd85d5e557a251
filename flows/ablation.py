"""The ``ablation`` flow: DPO arms × seeds on one shared SFT/sample/verify chain, and their report.

Wiring only: the plan is ``tasks.orchestration.ablation.ablation_nodes`` (one config per node: the arm's
``pairs.strategy``/``pairs.lam`` and the seed's ``dpo.seed``, so the shared stages have the same keys
for every arm and come from the cache), each node is ``tasks.orchestration.runner.run_node`` (cached Prefect task +
nested MLflow run), and the report is ``tasks.orchestration.ablation.run_ablation_stage`` (``<root>/ablation/<key>/``:
``ablation.md``, ``ablation.json``, ``ablation.png``, logged to MLflow)::

    .venv/bin/python -m flows.ablation -c conf/ablation-tiny.yaml --publish docs/results/tiny.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import load_profile, tracked
from tasks.analysis.ablation_render import publish
from tasks.orchestration import ablation, runner
from tasks.orchestration import plan as dag

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@task(name="ablation-report", cache_policy=NO_CACHE)
def report_task(cfg, manifests: dict[str, Any], command: str | None = None):
    return ablation.run_ablation_stage(cfg, manifests, command)


@flow(name="ablation")
def ablation_flow(profile: str = "conf/ablation-tiny.yaml", overrides: list[str] | None = None,
                  command: str | None = None) -> dict[str, Any]:
    """Train and evaluate every arm × seed of ``ablation`` in ``profile``; returns paths, keys and metrics."""
    cfg = load_profile(profile, overrides)
    with tracked(cfg, "ablation", profile, overrides) as tracker:
        results: dict[str, runner.NodeResult] = {}
        for node_cfg, node in ablation.ablation_nodes(cfg):
            inputs = {role: results[name].manifest for role, name in node.inputs}
            results[node.name] = runner.run_node(node_cfg, node, inputs, tracker)
        report_node = dag.Node("ablation", "ablation")
        run_id = tracker.start_stage(report_node) if tracker is not None else None
        manifest = report_task(cfg, {n: r.manifest for n, r in results.items()}, command)
        if tracker is not None:
            tracker.finish_stage(report_node, run_id, manifest, manifest.cached)
            tracker.log_summary(manifest.metrics)
    summary = runner.summarize(cfg, results, tracker)
    summary.update(report=str(manifest.file("ablation.md")), report_dir=str(manifest.path),
                   metrics=dict(manifest.metrics))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.ablation -c PROFILE [-o key=value ...] [--publish docs/results/tiny.md]``."""
    parser = argparse.ArgumentParser(prog="python -m flows.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="conf/ablation-tiny.yaml")
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--publish", default=None, help="Also write the report (and its plot) to this .md file.")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "-m", "flows.ablation", *(argv if argv is not None else sys.argv[1:])])
    summary = ablation_flow(profile=args.config, overrides=args.override, command=command)
    print(open(summary["report"], encoding="utf-8").read())
    if args.publish:
        print(f"published: {publish(summary['report_dir'], args.publish, command)}")
    print(f"artifacts: {summary['report_dir']}")
    if summary.get("mlflow_run_id"):
        print(f"mlflow run: {summary['mlflow_run_id']} ({summary['tracking_uri']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
