"""The generic stage shell: the pipeline plan, stage keys, and one Prefect task around ``build_stage``.

The pipeline is a list of :class:`Node` s computed from the config alone (:func:`pipeline`). A node is
one stage run, e.g. the DPO branch of the ``random`` strategy::

    Node(name="dpo/random", stage="dpo", inputs=(("sft", "sft"), ("pairs", "pairs/random")),
         strategy="random")

Its key is ``tasks.common.artifacts.stage_key(stage, stage_config(cfg, stage), upstream keys, VERSION)``,
where :func:`stage_config` picks the config sections listed in ``docs/stages.md``. Because upstream
keys are themselves content keys, every key of the DAG is known before anything runs
(:func:`plan_keys`), which is what lets a single stage run alone (``flows.stages``).

:func:`stage_task` is the Prefect task that runs one node. Its cache key is the stage key, but only
when the artifact folder is complete: Prefect then returns the persisted result (a ``Manifest``)
without running anything; otherwise the task body runs and ``build_stage`` either returns the complete
artifact or builds it (tmp folder + rename). :func:`run_node` wraps the task with tracking and the
one-line logs ``stage X: started (key) …`` (when it has to build) and ``stage X: cached|ran (key) → path``.

Prefect retries (data stage) skip deterministic errors (``tasks.common.artifacts.is_deterministic``: bad rows,
config errors, missing files); an interrupt (SIGINT/SIGTERM) ends the stage's MLflow run as KILLED.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from conf import STAGES, Config
from tasks.common.artifacts import (
    Manifest,
    build_stage,
    find_complete,
    retry_unless_deterministic,
    stage_dir,
    stage_key,
)

log = logging.getLogger("hnsdpo")

# stage -> "module:function"; imported lazily so that orchestration does not import torch up front.
STAGE_FUNCTIONS: dict[str, str] = {
    "data": "tasks.corpus.loaders:run_data",
    "base": "tasks.base:run_base",
    "sft": "tasks.sft:run_sft",
    "sample": "tasks.generation.sampling:run_sample",
    "verify": "tasks.verification.verdicts:run_verify",
    "pairs": "tasks.pairing.pairs:run_pairs",
    "dpo": "tasks.dpo:run_dpo",
    "evaluate": "tasks.evaluation.evalsets:run_evaluate",
    "report": "tasks.evaluation.report:run_report",
}
# Stages that checkpoint: their work folder survives a failure and the next attempt resumes from it.
RESUMABLE = frozenset({"base", "sft", "sample", "dpo"})
# Stages that get Prefect retries: I/O-bound only (training resumes from checkpoints instead), and
# only for errors that are not deterministic (retry_unless_deterministic).
IO_BOUND = frozenset({"data"})
# Stages built on a transformers Trainer: they get a progress callback (training.sft.ProgressCallback).
TRAINER_STAGES = frozenset({"sft", "dpo"})
DEFAULT_VERSION = "1"


@dataclass(frozen=True)
class Node:
    """One stage run in the DAG; ``inputs`` are (role, upstream node name) in call order."""

    name: str
    stage: str
    inputs: tuple[tuple[str, str], ...] = ()
    strategy: str | None = None
    label: str | None = None  # evaluate: the model's label in the report ("base", "dpo-weighted")
    key_inputs: tuple[str, ...] | None = None  # roles that feed the key; None = all

    @property
    def upstream(self) -> list[str]:
        return [n for _, n in self.inputs]

    def keyed_roles(self) -> list[str]:
        roles = [r for r, _ in self.inputs]
        return roles if self.key_inputs is None else [r for r in roles if r in self.key_inputs]


def pipeline(cfg: Config, until: str | None = None) -> list[Node]:
    """All nodes of the full DAG in execution order, cut after stage ``until`` (inclusive)."""
    if until is not None and until not in STAGES:
        raise ValueError(f"until: unknown stage {until!r}; expected one of {', '.join(STAGES)}")
    nodes = [
        Node("data", "data"),
        Node("base", "base", (("data", "data"),),
             key_inputs=("data",) if cfg.model.build_from_scratch else ()),
        Node("sft", "sft", (("base", "base"), ("data", "data"))),
        Node("sample", "sample", (("model", "sft"), ("data", "data"))),
        Node("verify", "verify", (("sample", "sample"), ("data", "data"))),
    ]
    for s in cfg.orchestration.strategies:
        nodes.append(Node(f"pairs/{s}", "pairs",
                          (("sample", "sample"), ("verify", "verify"), ("data", "data")), strategy=s))
        nodes.append(Node(f"dpo/{s}", "dpo", (("sft", "sft"), ("pairs", f"pairs/{s}")), strategy=s))
    evals: list[Node] = []
    for model in cfg.evaluate.models:
        sources = [(model, model)] if model != "dpo" else [(f"dpo-{s}", f"dpo/{s}")
                                                           for s in cfg.orchestration.strategies]
        for label, source in sources:
            evals.append(Node(f"evaluate/{label}", "evaluate", (("model", source), ("data", "data")),
                              label=label))
    nodes += evals
    if evals:
        nodes.append(Node("report", "report", tuple((e.label or e.name, e.name) for e in evals)))
    if until is not None:
        nodes = [n for n in nodes if STAGES.index(n.stage) <= STAGES.index(until)]
    return nodes


def stage_config(cfg: Config, stage: str, strategy: str | None = None) -> dict[str, Any]:
    """The config sections that feed ``stage``'s key (docs/stages.md)."""
    d = cfg.model_dump(mode="json")
    # How weights are loaded changes every stage that trains or generates.
    precision = {"quantization": d["model"]["quantization"], "dtype": d["model"]["dtype"]}
    evaluate = {k: v for k, v in d["evaluate"].items() if k != "models"}  # which models: flow-level
    by_stage: dict[str, dict[str, Any]] = {
        "data": {"data": d["data"]},
        "base": {"model": d["model"]},
        # SFT prompts are built with the sampling instruction, so the model learns the prompt it samples with.
        "sft": {"sft": d["sft"], "model": precision, "instruction": d["sample"]["instruction"]},
        "sample": {"sample": d["sample"], "model": precision},
        "verify": {"verify": d["verify"]},
        "pairs": {"pairs": {**d["pairs"], "strategy": strategy or d["pairs"]["strategy"]}},
        "dpo": {"dpo": d["dpo"], "model": precision, "instruction": d["sample"]["instruction"]},
        # the verifier judges sound accuracy on non-synthetic sets
        "evaluate": {"evaluate": evaluate, "model": precision, "vllm": d["sample"]["vllm"], "verify": d["verify"]},
        "report": {"evaluate": evaluate},
    }
    if stage not in by_stage:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return by_stage[stage]


def stage_function(stage: str) -> Callable[..., Any]:
    """Import the stage's core function by name (``STAGE_FUNCTIONS``)."""
    target = STAGE_FUNCTIONS[stage]
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"stage {stage}: cannot import {target}: {e}") from e


def _literal_version(module: str) -> str | None:
    """``VERSION = "…"`` read from the module's source without importing it (None when not a literal)."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    found = None
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] \
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == "VERSION" for t in targets):
            if not isinstance(stmt.value, ast.Constant):
                return None
            found = str(stmt.value.value)
    return found


def stage_version(stage: str) -> str:
    """The stage module's ``VERSION`` constant ("1" when the module does not define one).

    A module not imported yet is read, not imported (``hnsdpo plan`` need not load torch); the value is
    the same as the import's for a literal ``VERSION``.
    """
    import sys

    module = STAGE_FUNCTIONS[stage].partition(":")[0]
    if module not in sys.modules:
        literal = _literal_version(module)
        if literal is not None:
            return literal
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise RuntimeError(f"stage {stage}: cannot import {module}: {e}") from e
    return str(getattr(mod, "VERSION", DEFAULT_VERSION))


def node_key(cfg: Config, node: Node, input_keys: Mapping[str, str]) -> str:
    """Key of ``node`` given its upstream keys by role; equals the key ``build_stage`` writes."""
    keyed = {r: input_keys[r] for r in node.keyed_roles()}
    return stage_key(node.stage, stage_config(cfg, node.stage, node.strategy), keyed,
                     stage_version(node.stage))


def plan_keys(cfg: Config, nodes: Sequence[Node]) -> dict[str, str]:
    """node name -> key for every node, computed from the config alone (nodes in topological order)."""
    keys: dict[str, str] = {}
    for node in nodes:
        missing = [n for n in node.upstream if n not in keys]
        if missing:
            raise ValueError(f"node {node.name}: upstream {missing} not planned before it")
        keys[node.name] = node_key(cfg, node, {r: keys[n] for r, n in node.inputs})
    return keys


def artifacts_root(cfg: Config) -> Path:
    return Path(cfg.orchestration.artifacts_root).expanduser().resolve()


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def execute_stage(cfg: Config, node: Node, inputs: Mapping[str, Manifest],
                  callbacks: Sequence[Any] = ()) -> Manifest:
    """Run (or find) ``node``'s artifact: the core of :func:`stage_task`, usable without Prefect.

    ``inputs`` maps the node's roles to upstream manifests. Training stages receive ``callbacks=``
    when their function accepts it.
    """
    missing = [r for r, _ in node.inputs if r not in inputs]
    if missing:
        raise ValueError(f"node {node.name}: missing inputs {missing}")
    fn = stage_function(node.stage)
    dirs = [inputs[r].path for r, _ in node.inputs]
    kwargs: dict[str, Any] = {}
    if callbacks and _accepts(fn, "callbacks"):
        kwargs["callbacks"] = list(callbacks)

    def build(out: Path) -> Mapping[str, Any] | None:
        if node.stage == "report":
            return fn(cfg, {r: inputs[r].path for r, _ in node.inputs}, out, **kwargs)
        if node.stage == "pairs":
            return fn(cfg, node.strategy, *dirs, out, **kwargs)
        return fn(cfg, *dirs, out, **kwargs)

    keyed = {r: inputs[r] for r in node.keyed_roles()}
    key = node_key(cfg, node, {r: m.key for r, m in inputs.items()})
    if find_complete(artifacts_root(cfg), node.stage, key) is None:
        from tasks.common.progress import stage_logger

        parent = stage_dir(artifacts_root(cfg), node.stage, key).parent
        resumable = node.stage in RESUMABLE
        work = parent / (f".tmp-{key}" if resumable else f".tmp-{key}-{os.getpid()}")
        how = "resuming in" if resumable and work.is_dir() else "building in"
        stage_logger().info(f"stage {node.name}: started ({key}) {how} {work}")
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
    from tasks.orchestration.tracking import step_callbacks

    if not _accepts(stage_function(node.stage), "callbacks"):
        return execute_stage(cfg, node, inputs)
    callbacks: list[Any] = []
    if node.stage in TRAINER_STAGES:
        from training.sft import ProgressCallback

        callbacks.append(ProgressCallback(node.name))
    callbacks += step_callbacks(cfg, tracking_run_id)
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


def reevaluation_nodes(cfg: Config, version: str | int) -> list[Node]:
    """The data node and one evaluation of the registered model (upstream node ``registered``)."""
    return [Node("data", "data"),
            Node(f"evaluate/registered-v{version}", "evaluate", (("model", "registered"), ("data", "data")),
                 label=f"registered-v{version}")]


def _in_branch(node: Node, strategy: str) -> bool:
    if node.strategy is not None:
        return node.strategy == strategy
    if (node.label or "").startswith("dpo-"):
        return node.label == f"dpo-{strategy}"
    return True


def stage_nodes(cfg: Config, stage: str, strategy: str | None = None) -> list[Node]:
    """The nodes of one stage (all branches, or those of ``strategy``; evaluate: its dpo branch + baselines)."""
    nodes = [n for n in pipeline(cfg) if n.stage == stage]
    if strategy is not None:
        nodes = [n for n in nodes if _in_branch(n, strategy)]
    if not nodes:
        raise ValueError(f"stage {stage}: nothing to run for this profile"
                         + (f" and strategy {strategy}" if strategy else ""))
    return nodes


# --- looking before running: the plan, referenced keys, clean-up ------------------------------------------

def plan_status(cfg: Config, nodes: Sequence[Node] | None = None) -> list[dict[str, Any]]:
    """What a run of ``nodes`` (default: the whole pipeline) would do, without running anything.

    One dict per node: ``name``, ``stage``, ``key``, ``path`` and ``status``: ``cached`` (complete
    artifact: reused), ``resumes`` (a work folder ``.tmp-<key>`` of a checkpointing stage: continues from
    it) or ``will run``.
    """
    nodes = list(pipeline(cfg) if nodes is None else nodes)
    keys = plan_keys(cfg, nodes)
    root = artifacts_root(cfg)
    out = []
    for node in nodes:
        key = keys[node.name]
        path = stage_dir(root, node.stage, key)
        if find_complete(root, node.stage, key) is not None:
            status = "cached"
        elif node.stage in RESUMABLE and (path.parent / f".tmp-{key}").is_dir():
            status = "resumes"
        else:
            status = "will run"
        out.append({"name": node.name, "stage": node.stage, "key": key, "path": str(path), "status": status})
    return out


def referenced_keys(cfg: Config) -> set[tuple[str, str]]:
    """(stage, key) of every artifact the profile's flows use: the pipeline and, when the profile has
    ablation arms, the ablation flow's nodes and report."""
    refs = {(n.stage, k) for n, k in zip(pipeline(cfg), plan_keys(cfg, pipeline(cfg)).values(), strict=True)}
    if not getattr(cfg.ablation, "arms", None):
        return refs
    from tasks.analysis import ablation

    keys: dict[str, str] = {}
    for node_cfg, node in ablation.ablation_nodes(cfg):
        keys[node.name] = node_key(node_cfg, node, {r: keys[n] for r, n in node.inputs})
        refs.add((node.stage, keys[node.name]))
    ab = cfg.ablation
    needed = ["data", "verify", "evaluate/sft", *(f"pairs/{a.name}" for a in ab.arms),
              *(f"evaluate/{a.name}/s{s}" for a in ab.arms for s in ab.seeds)]
    if all(n in keys for n in needed):
        refs.add(("ablation", stage_key("ablation", ablation.report_config(cfg), {n: keys[n] for n in needed},
                                        str(ablation.VERSION))))
    return refs


def garbage(roots_refs: Mapping[Path, set[tuple[str, str]]]) -> list[tuple[Path, str]]:
    """(folder, why) of what ``hnsdpo gc`` removes under each artifacts root: complete key folders no
    profile references, and leftover work folders (``.tmp-<key>-<pid>`` of a dead process, downloads,
    ``.tmp-<key>`` of an unreferenced key). A referenced ``.tmp-<key>`` is kept: the next run resumes it."""
    from tasks.common.artifacts import scan_artifacts, tmp_owner_alive

    out: list[tuple[Path, str]] = []
    for root, refs in roots_refs.items():
        for stage, name, folder in scan_artifacts(root, [*STAGES, "ablation"]):
            if not name.startswith(".tmp-"):
                if (stage, name) not in refs:
                    out.append((folder, "unreferenced key"))
                continue
            key = name.removeprefix(".tmp-").split("-", 1)[0]
            if tmp_owner_alive(folder):
                continue
            if name == f".tmp-{key}" and (stage, key) in refs:
                continue  # a resumable work folder of a current key
            out.append((folder, "leftover work folder"))
    return out
