"""The ablation stage: the report over DPO arms × seeds against the SFT model on one held-out test set.

Reads the SFT model's and every arm × seed's evaluate folders, each arm's pairs folder, the verify folder
(dimensions of the rejected samples) and the data folder (the test problems with ``meta``); runs the
verifier on the SFT model's evaluation outputs; writes ``ablation.json``, ``ablation.md``, ``ablation.png``
and ``sft_verdicts.jsonl``. What the report holds: :mod:`tasks.analysis.ablation`. The plan (arms × seeds)
and the artifact are built by :mod:`tasks.orchestration.ablation`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conf.schema import AblationConfig
from tasks.analysis.ablation import AblationData, ReportSettings, build_ablation_report, classify_sft
from tasks.analysis.ablation_inputs import (
    arm_displacement,
    arm_outcomes,
    dataset_name,
    outcomes,
    pool_summary,
    read_graded,
    read_pairs,
    read_test_set,
    score_sft_outputs,
    sound_section,
)
from tasks.analysis.ablation_render import flat_metrics, plot_ablation, render_markdown
from tasks.common.records import write_jsonl
from tasks.pairing.pairs import read_verdicts

VERSION = "4"


def report_config(cfg) -> dict[str, Any]:
    """What the report's artifact key depends on (besides its inputs)."""
    d = cfg.model_dump(mode="json")
    return {"ablation": d["ablation"], "evaluate": {k: d["evaluate"][k] for k in ("bootstrap_samples", "seed")},
            "verify": d["verify"]}


def run_ablation_report(cfg, sft_eval: str | Path, arm_evals: Mapping[str, Mapping[int, str | Path]],
                        arm_pairs: Mapping[str, str | Path], verify_dir: str | Path, data_dir: str | Path,
                        out: str | Path, *, arm_meta: Mapping[str, Mapping[str, Any]] | None = None,
                        command: str | None = None, verifier=None) -> dict[str, float]:
    """Write ``ablation.json``, ``ablation.md``, ``ablation.png`` and ``sft_verdicts.jsonl`` into ``out``.

    ``sft_eval``/``arm_evals[arm][seed]``: evaluate stage folders; ``arm_pairs[arm]``: the pairs stage
    folder the arm trained on; ``verify_dir``: the verify stage (dims of the rejected samples);
    ``data_dir``: the data stage (test problems with ``meta``). Returns :func:`flat_metrics`.
    """
    ab = getattr(cfg, "ablation", None) or AblationConfig()  # the schema's defaults without an ablation section
    name = dataset_name(cfg)
    all_problems, sft_rows = read_test_set(name, sft_eval, data_dir)
    problems = [all_problems[r["id"]] for r in sft_rows]  # the evaluated subset, in evaluation order
    arm_rows = {arm: {int(s): read_graded(Path(d) / f"{name}.jsonl") for s, d in by_seed.items()}
                for arm, by_seed in arm_evals.items()}
    verdicts = score_sft_outputs(cfg, all_problems, sft_rows, verifier)
    pool = read_verdicts(Path(verify_dir) / "verdicts.jsonl")
    settings = ReportSettings.of(cfg)
    data = AblationData(
        problems, outcomes(sft_rows, "correct"), arm_outcomes(arm_rows, "correct"), arm_meta=arm_meta or {},
        sft_kinds=classify_sft(sft_rows, verdicts, all_problems, rel=ab.near_miss_rel, abs_tol=ab.near_miss_abs),
        pairs={arm: read_pairs(Path(d) / "pairs.jsonl") for arm, d in arm_pairs.items()},
        rejected_dims={(v.problem_id, v.index): v.dims for v in pool}, pool=pool_summary(pool))
    report = build_ablation_report(data, settings).model_copy(update={
        "sound": sound_section(problems, sft_rows, arm_rows, arm_meta or {}, settings),
        "displacement": arm_displacement(arm_evals), "dataset": name, "command": command,
        "profile": getattr(cfg, "name", None)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sft_verdicts.jsonl", list(verdicts.values()))
    (out / "ablation.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
    (out / "ablation.md").write_text(
        render_markdown(report, command, f"Ablation: {getattr(cfg, 'name', '')} on {name}"), encoding="utf-8")
    plot_ablation(report, out / "ablation.png")
    return flat_metrics(report)
