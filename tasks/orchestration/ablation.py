"""The ablation plan and its report artifact: DPO arms × seeds on one shared SFT/sample/verify chain.

:func:`ablation_nodes` gives one config per node (the arm's ``pairs.strategy``/``pairs.lam`` and the
seed's ``dpo.seed``, so the shared stages have the same keys for every arm and come from the cache);
:func:`run_ablation_stage` builds (or finds) ``<root>/ablation/<key>/`` with the ablation stage
(``tasks/ablation.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks import ablation
from tasks.analysis.ablation import SFT, AblationError
from tasks.common.artifacts import build_stage
from tasks.orchestration.plan import Node, artifacts_root, pipeline

SHARED_STAGES = ("data", "base", "sft", "sample", "verify")


def arm_config(cfg, arm, seed: int):
    """The profile for one (arm, seed): ``pairs.strategy`` (+ ``pairs.lam`` of a weighted arm, the arm's
    ``soundness`` and weight ``formula`` when set) and
    ``dpo.seed`` changed, everything else as in ``cfg`` — so the shared stages keep their keys."""
    d = cfg.model_dump(mode="python")
    d["pairs"] = {**d["pairs"], "strategy": arm.strategy, **({"lam": arm.lam} if arm.lam is not None else {}),
                  **({"soundness": arm.soundness} if arm.soundness is not None else {})}
    if arm.formula is not None:
        d["pairs"]["weights"] = {**d["pairs"]["weights"], "formula": arm.formula}
    d["dpo"] = {**d["dpo"], "seed": int(seed)}
    return type(cfg).model_validate(d)


def ablation_nodes(cfg) -> list[tuple[Any, Any]]:
    """``(config, runner.Node)`` in execution order: the shared chain, SFT's evaluation, then per arm its
    pairs and per seed its DPO and evaluation. Node names: ``pairs/<arm>``, ``dpo/<arm>/s<seed>``,
    ``evaluate/<arm>/s<seed>`` (labels ``<arm>/s<seed>``)."""
    ab = cfg.ablation
    shared = [n for n in pipeline(cfg, until="verify") if n.stage in SHARED_STAGES]
    out: list[tuple[Any, Any]] = [(cfg, n) for n in shared]
    out.append((cfg, Node("evaluate/sft", "evaluate", (("model", "sft"), ("data", "data")), label=SFT)))
    for arm in ab.arms:
        pairs = Node(f"pairs/{arm.name}", "pairs", (("sample", "sample"), ("verify", "verify"), ("data", "data")),
                     strategy=arm.strategy)
        out.append((arm_config(cfg, arm, ab.seeds[0]), pairs))
        for seed in ab.seeds:
            arm_cfg = arm_config(cfg, arm, seed)
            dpo = Node(f"dpo/{arm.name}/s{seed}", "dpo", (("sft", "sft"), ("pairs", pairs.name)),
                       strategy=arm.strategy)
            out.append((arm_cfg, dpo))
            out.append((arm_cfg, Node(f"evaluate/{arm.name}/s{seed}", "evaluate",
                                      (("model", dpo.name), ("data", "data")), label=f"{arm.name}/s{seed}")))
    return out


def run_ablation_stage(cfg, manifests: Mapping[str, Any], command: str | None = None):
    """Build (or find) the report artifact ``<root>/ablation/<key>/`` from the manifests of the nodes of
    :func:`ablation_nodes` (by node name); returns its ``Manifest``."""
    ab = cfg.ablation
    needed = ["data", "verify", "evaluate/sft", *(f"pairs/{a.name}" for a in ab.arms),
              *(f"evaluate/{a.name}/s{s}" for a in ab.arms for s in ab.seeds)]
    missing = [n for n in needed if n not in manifests]
    if missing:
        raise AblationError(f"ablation report: no artifact for {missing}")
    inputs = {n: manifests[n] for n in needed}
    meta = {a.name: {"strategy": a.strategy, "lam": a.lam if a.lam is not None else
                     (cfg.pairs.lam if a.strategy == "weighted" else None)} for a in ab.arms}

    def build(out: Path) -> dict[str, float]:
        return ablation.run_ablation_report(
            cfg, inputs["evaluate/sft"].path,
            {a.name: {s: inputs[f"evaluate/{a.name}/s{s}"].path for s in ab.seeds} for a in ab.arms},
            {a.name: inputs[f"pairs/{a.name}"].path for a in ab.arms}, inputs["verify"].path,
            inputs["data"].path, out, arm_meta=meta, command=command)

    return build_stage(artifacts_root(cfg), "ablation", ablation.VERSION, ablation.report_config(cfg), inputs,
                       build)

