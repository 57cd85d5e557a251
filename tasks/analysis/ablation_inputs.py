"""Reading the ablation stage's inputs: evaluation records, pairs, the test set, and the verifier's verdicts
on the SFT model's outputs (the ablation stage, ``tasks/ablation.py``, calls these)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.analysis.ablation import AblationData, AblationError, ReportSettings, build_ablation_report
from tasks.analysis.ablation_rows import DisplacementRow, PoolSummary, SoundSection
from tasks.common.records import Pair, Problem, iter_jsonl, read_records
from tasks.verification.verdicts import verdict_metrics
from verifier.verdict import Verdict


def read_graded(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an evaluate stage's ``<dataset>.jsonl``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"evaluation records not found: {path}")
    rows = []
    for line_no, row in enumerate(iter_jsonl(path), start=1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("correct"), bool):
            raise AblationError(f"{path}: line {line_no} lacks a string 'id' and a boolean 'correct'")
        rows.append(row)
    return rows


def read_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"pairs file not found: {path}")
    return read_records(path, Pair, error=AblationError)


def dataset_name(cfg) -> str:
    """``ablation.dataset``, else the first ``evaluate.datasets`` / ``data.eval`` name."""
    ab = getattr(cfg, "ablation", None)
    if ab is not None and ab.dataset:
        return ab.dataset
    names = list(cfg.evaluate.datasets) or [d.name for d in cfg.data.eval]
    if not names:
        raise AblationError("no evaluation set: set ablation.dataset or data.eval")
    return names[0]


def score_sft_outputs(cfg, problems: Mapping[str, Problem], records: Sequence[Mapping[str, Any]],
                      verifier=None) -> dict[str, Verdict]:
    """Run the verifier on the SFT model's evaluation outputs: problem id -> verdict."""
    if verifier is None:
        from verifier import MathVerifier

        verifier = MathVerifier(cfg.verify)
    items = [{"question": problems[r["id"]].question, "solution": r.get("output", ""), "gold": r["gold"],
              "reference": problems[r["id"]].solution, "problem_id": r["id"], "index": 0} for r in records]
    verdicts = verifier.score_batch(items, workers=cfg.verify.workers, progress=False)
    if len(verdicts) != len(items):
        raise AblationError(f"verifier returned {len(verdicts)} verdicts for {len(items)} outputs")
    return {r["id"]: v.model_copy(update={"problem_id": r["id"], "index": 0})
            for r, v in zip(records, verdicts, strict=True)}


def read_test_set(name: str, sft_eval: str | Path, data_dir: str | Path
                  ) -> tuple[dict[str, Problem], list[dict[str, Any]]]:
    """(id -> test problem, the SFT model's evaluation rows of set ``name``); every evaluated id must be a
    problem of the set."""
    from tasks.evaluation.evalsets import read_problem_file

    problem_file = Path(data_dir) / "eval" / f"{name}.jsonl"
    if not problem_file.is_file():
        raise AblationError(f"test set not found: {problem_file}")
    all_problems = {p.id: p for p in read_problem_file(problem_file)}
    sft_rows = read_graded(Path(sft_eval) / f"{name}.jsonl")
    unknown = [r["id"] for r in sft_rows if r["id"] not in all_problems]
    if unknown:
        raise AblationError(f"{sft_eval}: {len(unknown)} evaluated id(s) not in {problem_file}, e.g. {unknown[:3]}")
    return all_problems, sft_rows


def outcomes(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, bool]:
    """id -> ``row[key]`` (``correct`` or ``sound``) of the rows where it is a boolean."""
    return {r["id"]: r[key] for r in rows if isinstance(r.get(key), bool)}


def arm_outcomes(arm_rows: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]], key: str
                 ) -> dict[str, dict[int, dict[str, bool]]]:
    return {arm: {s: outcomes(rows, key) for s, rows in by_seed.items()} for arm, by_seed in arm_rows.items()}


def sound_section(problems: Sequence[Problem], sft_rows: Sequence[Mapping[str, Any]],
                  arm_rows: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]],
                  arm_meta: Mapping[str, Mapping[str, Any]], settings: ReportSettings) -> SoundSection | None:
    """Arm rows and comparisons on sound correctness, when every record of every model has ``sound``."""
    sft_sound = outcomes(sft_rows, "sound")
    arms_sound = arm_outcomes(arm_rows, "sound")
    if len(sft_sound) != len(sft_rows) or any(len(v) != len(sft_rows) for b in arms_sound.values()
                                              for v in b.values()):
        return None
    sound = build_ablation_report(AblationData(problems, sft_sound, arms_sound, arm_meta=arm_meta), settings)
    methods = {r.get("sound_method") for r in sft_rows}
    return SoundSection(arms=sound.arms, comparisons=sound.comparisons,
                        method=methods.pop() if len(methods) == 1 else "mixed")


def arm_displacement(arm_evals: Mapping[str, Mapping[int, str | Path]]) -> list[DisplacementRow]:
    """Per arm, the DPO stages' likelihood-displacement metrics (:func:`tasks.evaluation.report.displacement_rows`)
    averaged over the seeds that have them."""
    from tasks.evaluation.report import DISPLACEMENT_KEYS, displacement_rows

    out = []
    for arm, by_seed in arm_evals.items():
        rows = displacement_rows({str(s): d for s, d in by_seed.items()})
        if rows:
            out.append(DisplacementRow(arm=arm, seeds=len(rows),
                                       **{k: float(np.mean([r[k] for r in rows])) for k in DISPLACEMENT_KEYS}))
    return out


def pool_summary(verdicts: Sequence[Verdict]) -> PoolSummary | None:
    """The sampled pool from the verify stage's verdicts (:func:`verdict_metrics`), with samples per problem."""
    if not verdicts:
        return None
    m = verdict_metrics(verdicts)
    ks = Counter(v.problem_id for v in verdicts).values()
    return PoolSummary(
        problems=m["n_problems"], samples=m["n_verdicts"], k_min=min(ks), k_max=max(ks),
        correct_share=m["correct_rate"], sound_correct_share=m["sound_correct"] / m["n_verdicts"],
        mixed=m["problems_mixed"], all_correct=m["problems_all_correct"], all_wrong=m["problems_all_incorrect"])
