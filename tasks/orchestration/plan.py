"""The pipeline plan and its keys, computed from the config alone.

The pipeline is a list of :class:`Node` s (:func:`pipeline`). A node is one stage run, e.g. the DPO
branch of the ``random`` strategy::

    Node(name="dpo/random", stage="dpo", inputs=(("sft", "sft"), ("pairs", "pairs/random")),
         strategy="random")

Its key is ``tasks.common.artifacts.stage_key(stage, stage_config(cfg, stage), upstream keys, VERSION)``,
where :func:`stage_config` picks the config sections listed in ``docs/stages.md`` and ``VERSION`` is the
stage module's constant (:func:`tasks.orchestration.stages.stage_version`). Because upstream keys are
themselves content keys, every key of the DAG is known before anything runs (:func:`plan_keys`), which is
what lets a single stage run alone (``flows.stages``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conf import STAGES, Config
from tasks.common.artifacts import folder_fingerprint, stage_key
from tasks.corpus.synthetic import corpus_seed
from tasks.orchestration.stages import stage_version


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
        # keyed by its corpus (stage_config), not by the data stage: a pinned corpus is built on once
        Node("base", "base", (("data", "data"),), key_inputs=()),
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
        # model.tiny is the from-scratch recipe: a loaded base is not keyed by it
        "base": ({"model": d["model"], "corpus": pretrain_corpus(cfg)} if cfg.model.build_from_scratch else
                 {"model": {k: v for k, v in d["model"].items() if k != "tiny"}, **local_model(cfg)}),
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


def local_model(cfg: Config) -> dict[str, Any]:
    """A base loaded from a local folder is keyed by its files' contents too, not only by its path: new
    weights at the same path (a re-shipped testbed base, a re-exported checkpoint) make a new base stage and
    everything downstream of it (:func:`tasks.common.artifacts.folder_fingerprint`). Hub ids are keyed by
    id and ``model.revision``."""
    ref = cfg.model.name_or_path
    if ref and Path(ref).expanduser().exists():
        return {"local_files": folder_fingerprint(ref)}
    return {}


def pretrain_corpus(cfg: Config) -> dict[str, Any]:
    """What the data stage's ``pretrain.txt`` is a function of: the synthetic settings with the seed the corpus
    is drawn with (``data.synthetic.pretrain_seed``, else ``data.synthetic.seed``), the solution format and the
    data stage's code version. A from-scratch base is keyed by it instead of by the whole data stage, so data
    seeds that share a pinned corpus share the base."""
    syn = cfg.data.synthetic
    pinned = syn.model_copy(update={"seed": corpus_seed(syn), "pretrain_seed": None})
    return {"synthetic": pinned.model_dump(mode="json"), "solution_format": cfg.data.solution_format,
            "data_version": stage_version("data")}


def node_config(cfg: Config, node: Node) -> Config:
    """The config a node's stage function gets: the profile, with a DPO branch's strategy as
    ``pairs.strategy`` (the key still comes from :func:`stage_config`, which reads ``node.strategy``)."""
    if node.strategy is None or node.strategy == cfg.pairs.strategy:
        return cfg
    return cfg.model_copy(update={"pairs": cfg.pairs.model_copy(update={"strategy": node.strategy})})


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
