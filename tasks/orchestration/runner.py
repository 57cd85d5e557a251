"""Running nodes: one Prefect task around ``build_stage``, tracking, and the one-line logs.

:func:`stage_task` is the Prefect task that runs one node (:mod:`tasks.orchestration.plan`). Its cache key
is the stage key, but only when the artifact folder is complete: Prefect then returns the persisted result
(a ``Manifest``) without running anything; otherwise the task body runs and ``build_stage`` either returns
the complete artifact or builds it (tmp folder + rename) with the stage's function
(:mod:`tasks.orchestration.stages`). :func:`run_node` wraps the task with tracking and the one-line logs
``stage X: started (key) …`` (when it has to build) and ``stage X: cached|ran (key) → path``.

Prefect retries (data stage) skip deterministic errors (``tasks.common.artifacts.is_deterministic``: bad
rows, config errors, missing files); an interrupt (SIGINT/SIGTERM) ends the stage's MLflow run as KILLED.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from conf import Config
from tasks.common.artifacts import Manifest, build_stage, find_complete, retry_unless_deterministic, stage_dir
from tasks.common.progress import stage_logger
from tasks.orchestration.plan import (
    Node,
    artifacts_root,
    node_config,
    node_key,
    pipeline,
    plan_keys,
    stage_config,
)
from tasks.orchestration.stages import IO_BOUND, RESUMABLE, TRAINER_STAGES, stage_function, stage_version


def _log_start(cfg: Config, node: Node, key: str) -> None:
    """``stage X: started (key) building|resuming in <work folder>`` when the artifact is not complete."""
    if find_complete(artifacts_root(cfg), node.stage, key) is not None:
        return
    parent = stage_dir(artifacts_root(cfg), node.stage, key).parent
    resumable = node.stage in RESUMABLE
    work = parent / (f".tmp-{key}" if resumable else f".tmp-{key}-{os.getpid()}")
    how = "resuming in" if resumable and work.is_dir() else "building in"
    stage_logger().info(f"stage {node.name}: started ({key}) {how} {work}")


def execute_stage(cfg: Config, node: Node, inputs: Mapping[str, Manifest],
                  callbacks: Sequence[Any] = ()) -> Manifest:
    """Run (or find) ``node``'s artifact: the core of :func:`stage_task`, usable without Prefect.

    ``inputs`` maps the node's roles to upstream manifests; the stage function gets their folders.
    """
    missing = [r for r, _ in node.inputs if r not in inputs]
    if missing:
        raise ValueError(f"node {node.name}: missing inputs {missing}")
    run = stage_function(node.stage)
    folders = {r: inputs[r].path for r, _ in node.inputs}
    stage_cfg = node_config(cfg, node)

    def build(out: Path) -> Mapping[str, Any] | None:
        return run(stage_cfg, folders, out, list(callbacks))

    keyed = {r: inputs[r] for r in node.keyed_roles()}
    key = node_key(cfg, node, {r: m.key for r, m in inputs.items()})
    _log_start(cfg, node, key)
    return build_stage(artifacts_root(cfg), node.stage, stage_version(node.stage),
                       stage_config(cfg, node.stage, node.strategy), keyed, build,
                       resume_dir=node.stage in RESUMABLE)


def stage_cache_key(ctx: TaskRunContext, params: dict[str, Any]) -> str | None:
    """Prefect ``cache_key_fn``: ``<stage>-<key>`` when that artifact is complete, else None (run)."""
    cfg, node, inputs = params["cfg"], params["node"], params["inputs"]
    key = node_key(cfg, node, {r: m.key for r, m in inputs.items()})
    if find_complete(artifacts_root(cfg), node.stage, key) is None:
        return None
    return f"{node.stage}-{key}"


@task(cache_key_fn=stage_cache_key, persist_result=True, task_run_name="{node.name}")
def stage_task(cfg: Config, node: Node, inputs: dict[str, Manifest],
               tracking_run_id: str | None = None) -> Manifest:
    """Prefect shell of :func:`execute_stage`; step metrics go to MLflow run ``tracking_run_id``."""
    if node.stage not in TRAINER_STAGES:
        return execute_stage(cfg, node, inputs)
    from tasks.orchestration.tracking import step_callbacks
    from training.sft import ProgressCallback  # torch: only a training stage needs it

    callbacks = [ProgressCallback(node.name), *step_callbacks(cfg, tracking_run_id)]
    return execute_stage(cfg, node, inputs, callbacks=callbacks)


def configured_stage_task(cfg: Config, node: Node):
    """``stage_task`` with this profile's result storage (under the artifacts root) and retries."""
    retries = cfg.orchestration.retries if node.stage in IO_BOUND else 0
    return stage_task.with_options(
        result_storage=artifacts_root(cfg) / ".prefect" / "results",
        retries=retries, retry_delay_seconds=cfg.orchestration.retry_delay_s,
        retry_condition_fn=retry_unless_deterministic,
    )


@dataclass(frozen=True)
class NodeResult:
    node: Node
    manifest: Manifest
    cached: bool

    def line(self) -> str:
        return (f"stage {self.node.name}: {'cached' if self.cached else 'ran'} "
                f"({self.manifest.key}) → {self.manifest.path}")


def run_node(cfg: Config, node: Node, inputs: Mapping[str, Manifest], tracker: Any = None) -> NodeResult:
    """Run one node inside a flow: nested tracking run, the cached Prefect task, the log line."""
    from prefect import get_run_logger

    key = node_key(cfg, node, {r: m.key for r, m in inputs.items()})
    run_id = tracker.start_stage(node, key=key) if tracker is not None else None
    try:
        state = configured_stage_task(cfg, node)(cfg, node, dict(inputs), run_id, return_state=True)
    except BaseException as e:  # an interrupt (KeyboardInterrupt, Prefect's TerminationSignal) mid-stage
        if tracker is not None:
            tracker.kill_stage(node, run_id, e)
        raise
    if not state.is_completed():
        if tracker is not None:
            tracker.fail_stage(node, run_id, state.message or "failed")
        state.result()  # raises the stage's exception
    manifest: Manifest = state.result()
    cached = state.name == "Cached" or manifest.cached
    if not manifest.path.is_dir():  # the result outlived its folder (moved root): reload by key
        manifest = Manifest.load(stage_dir(artifacts_root(cfg), node.stage, manifest.key))
    result = NodeResult(node, manifest, cached)
    if tracker is not None:
        tracker.finish_stage(node, run_id, manifest, cached)
    get_run_logger().info(result.line())
    return result


def complete_upstream(cfg: Config, node: Node) -> dict[str, Manifest]:
    """Manifests of ``node``'s inputs, which must already be complete (to run a stage alone)."""
    nodes = pipeline(cfg)
    by_name = {n.name: n for n in nodes}
    keys = plan_keys(cfg, nodes)
    root = artifacts_root(cfg)
    out: dict[str, Manifest] = {}
    for role, name in node.inputs:
        m = find_complete(root, by_name[name].stage, keys[name])
        if m is None:
            raise RuntimeError(f"stage {node.name} needs {name} ({keys[name]}) under {root}, which is "
                               f"not built yet: run `hnsdpo run --until {by_name[name].stage}` first")
        out[role] = m
    return out


def run_nodes(cfg: Config, nodes: Sequence[Node], tracker: Any = None,
              done: Mapping[str, NodeResult] | None = None) -> dict[str, NodeResult]:
    """Run ``nodes`` in order, feeding each the manifests of its upstream results.

    Upstream nodes not in ``nodes`` (a single-stage flow) must be complete on disk already.
    """
    results: dict[str, NodeResult] = dict(done or {})
    for node in nodes:
        if all(n in results for n in node.upstream):
            inputs = {r: results[n].manifest for r, n in node.inputs}
        else:
            inputs = complete_upstream(cfg, node)
        results[node.name] = run_node(cfg, node, inputs, tracker)
    return results


def summarize(cfg: Config, results: Mapping[str, NodeResult], tracker: Any = None) -> dict[str, Any]:
    """What a flow run returns: artifacts root, MLflow run id, report path, and each node's key/path."""
    report = results.get("report")
    return {
        "artifacts_root": str(artifacts_root(cfg)),
        "mlflow_run_id": getattr(tracker, "parent_id", None),
        "tracking_uri": getattr(tracker, "uri", None),
        "report": str(report.manifest.file("report.md")) if report else None,
        "stages": {name: {"key": r.manifest.key, "path": str(r.manifest.path), "cached": r.cached}
                   for name, r in results.items()},
    }


# --- looking before running: the plan, referenced keys, clean-up ------------------------------------------


