"""A DPO settings sweep read on the validation split: the grid, its rows and its table.

``flows.sweep`` runs the pipeline up to evaluation once per grid point (every upstream stage whose
config the point does not touch comes from the cache) and hands the evaluate and DPO manifests here.
Each row is one (point, arm): accuracy and sound accuracy on the sweep's dataset (the validation split,
never a test set), the paired difference to SFT on the same problems, and the DPO stage's displacement
diagnostic. :func:`render_markdown` writes the table and names the best point per arm — by validation
accuracy, with its interval, so a choice inside the noise is visible as such.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

SWEEPABLE = ("dpo.", "pairs.")  # the sections a DPO sweep may vary (data/base/sft/sample stay cached)


class SweepError(ValueError):
    """A grid that cannot be swept (unknown syntax, a section outside DPO/pairs, no values)."""


def check_grid(grid: Mapping[str, Sequence[str]]) -> Mapping[str, Sequence[str]]:
    """``grid`` itself, or :class:`SweepError` when it is empty, has a key outside ``dpo.*``/``pairs.*``, or a
    key without values."""
    if not grid:
        raise SweepError("empty grid: give at least one --grid KEY=V1,V2")
    for key, values in grid.items():
        if not key.startswith(SWEEPABLE):
            raise SweepError(f"grid key {key!r}: a DPO sweep varies dpo.* or pairs.* only "
                             "(the upstream stages must stay cached)")
        if not values:
            raise SweepError(f"grid key {key!r}: no values")
    return grid


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["dpo.beta=0.1,0.5", "dpo.max_steps=30,60"]`` -> ``{"dpo.beta": ["0.1", "0.5"], ...}`` (values are
    override strings, parsed by the profile loader like any ``-o``)."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise SweepError(f"grid entry {spec!r}: expected KEY=V1,V2,...")
        if key in grid:
            raise SweepError(f"grid key {key!r} given twice")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    check_grid(grid)
    return grid


def points(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination, in grid order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def overrides_of(point: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in point.items()]


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def row(point: Mapping[str, str], arm: str, eval_metrics: Mapping[str, Any], sft_metrics: Mapping[str, Any],
        dpo_metrics: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """One (point, arm) row from the flat evaluate metrics (``<dataset>/accuracy`` …) of the arm and of SFT
    and the DPO stage's metrics."""
    acc = _num(eval_metrics.get(f"{dataset}/accuracy"))
    if acc is None:
        raise SweepError(f"no {dataset}/accuracy in the evaluate metrics of {arm} at {dict(point)}: is {dataset!r} "
                         "one of the evaluated sets (data.validation, evaluate.datasets)?")
    sft = _num(sft_metrics.get(f"{dataset}/accuracy"))
    sound, sft_sound = _num(eval_metrics.get(f"{dataset}/sound_accuracy")), _num(sft_metrics.get(f"{dataset}/sound_accuracy"))
    return {
        "point": dict(point), "arm": arm, "n": eval_metrics.get(f"{dataset}/n"),
        "accuracy": acc, "ci_low": _num(eval_metrics.get(f"{dataset}/ci_low")),
        "ci_high": _num(eval_metrics.get(f"{dataset}/ci_high")),
        "diff_vs_sft": None if sft is None else acc - sft,
        "sound_accuracy": sound, "sound_diff_vs_sft": None if sound is None or sft_sound is None else sound - sft_sound,
        "logps_chosen_delta": _num(dpo_metrics.get("logps_chosen_delta")),
        "logps_rejected_delta": _num(dpo_metrics.get("logps_rejected_delta")),
        "margin_last": _num(dpo_metrics.get("rewards_margins_last")),
    }


def best(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm, the row with the highest validation accuracy (ties: the earlier point)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["arm"] not in out or r["accuracy"] > out[r["arm"]]["accuracy"]:
            out[r["arm"]] = dict(r)
    return out


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    keys = list(report["grid"])
    rows = report["rows"]
    lines = [f"# DPO sweep: {report.get('profile') or ''} on {report['dataset']}", ""]
    if report.get("command"):
        lines += ["Regenerate with:", "", "```bash", report["command"], "```", ""]
    lines += [f"From commit `{str(report.get('commit') or 'unknown')[:12]}`. Every number is read on "
              f"**{report['dataset']}** (n = {report.get('n')}), the validation split held out of sampling; none on a "
              "test set. SFT: " + _pct(report.get("sft_accuracy")) + "%.", ""]
    if report.get("n"):
        half = 1.96 * math.sqrt(0.25 / report["n"])
        lines += [f"At n = {report['n']} a 95% interval on one accuracy is up to ±{100 * half:.1f} points; "
                  "differences between points smaller than that are not evidence for either.", ""]
    lines += ["| " + " | ".join(keys) + " | arm | accuracy | 95% CI | Δ vs SFT | sound | Δ sound | chosen logp Δ "
              "| rejected logp Δ | margin |",
              "| " + " | ".join("---" for _ in keys) + " | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ci = "—" if r["ci_low"] is None else f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        lines.append("| " + " | ".join(str(r["point"][k]) for k in keys) + f" | {r['arm']} | {_pct(r['accuracy'])} "
                     f"| {ci} | {_pct(r['diff_vs_sft'], True)} | {_pct(r['sound_accuracy'])} "
                     f"| {_pct(r['sound_diff_vs_sft'], True)} | {_f(r['logps_chosen_delta'])} "
                     f"| {_f(r['logps_rejected_delta'])} | {_f(r['margin_last'])} |")
    lines += ["", "Best point per arm (validation accuracy):", ""]
    for arm, r in report["best"].items():
        lines.append(f"- {arm}: " + ", ".join(f"{k}={v}" for k, v in r["point"].items())
                     + f" → {_pct(r['accuracy'])}% ({_pct(r['diff_vs_sft'], True)} points vs SFT)")
    return "\n".join(lines) + "\n"


__all__ = ["SWEEPABLE", "SweepError", "best", "check_grid", "overrides_of", "parse_grid", "points", "render_markdown", "row"]
