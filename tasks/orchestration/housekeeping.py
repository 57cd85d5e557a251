"""Looking before running: what a run would do (``hnsdpo plan``), the keys the profiles reference, and what
``hnsdpo gc`` may remove."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conf import STAGES, Config
from tasks import ablation as ablation_stage
from tasks.common.artifacts import find_complete, scan_artifacts, stage_dir, stage_key, tmp_owner_alive
from tasks.orchestration.plan import Node, artifacts_root, node_key, pipeline, plan_keys
from tasks.orchestration.stages import RESUMABLE


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
    from tasks.orchestration import ablation  # the ablation plan: only for profiles with arms

    keys: dict[str, str] = {}
    for node_cfg, node in ablation.ablation_nodes(cfg):
        keys[node.name] = node_key(node_cfg, node, {r: keys[n] for r, n in node.inputs})
        refs.add((node.stage, keys[node.name]))
    ab = cfg.ablation
    needed = ["data", "verify", "evaluate/sft", *(f"pairs/{a.name}" for a in ab.arms),
              *(f"evaluate/{a.name}/s{s}" for a in ab.arms for s in ab.seeds)]
    if all(n in keys for n in needed):
        refs.add(("ablation", stage_key("ablation", ablation_stage.report_config(cfg), {n: keys[n] for n in needed},
                                        str(ablation_stage.VERSION))))
    return refs


def garbage(roots_refs: Mapping[Path, set[tuple[str, str]]]) -> list[tuple[Path, str]]:
    """(folder, why) of what ``hnsdpo gc`` removes under each artifacts root: complete key folders no
    profile references, and leftover work folders (``.tmp-<key>-<pid>`` of a dead process, downloads,
    ``.tmp-<key>`` of an unreferenced key). A referenced ``.tmp-<key>`` is kept: the next run resumes it."""
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
