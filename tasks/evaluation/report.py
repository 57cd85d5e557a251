"""The comparison report: every model × dataset with confidence intervals and paired tests against a
reference (the report stage, ``tasks/report.py``, runs it).

:func:`build_report` from per-problem records, :func:`render_markdown` (``report.md``, which the
orchestration publishes as a Prefect artifact), :func:`plot_report` and the flat metrics of the manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tasks.common.artifacts import Manifest
from tasks.common.records import iter_jsonl
from tasks.evaluation.stats import accuracy, mcnemar, paired_difference

DASH = "—"

# label -> dataset -> [(problem id, correct)], in each set's order
EvalResults = Mapping[str, Mapping[str, Sequence[tuple[str, bool]]]]


class ReportError(ValueError):
    """An evaluate folder that cannot be read; the message names the folder or file."""


def load_eval_dir(folder: str | Path, key: str = "correct") -> dict[str, list[tuple[str, bool]]]:
    """``dataset -> [(id, correct)]`` of one evaluate stage folder (datasets from its ``metrics.json``);
    ``key="sound"`` reads sound correctness instead, keeping only the datasets whose every record has it."""
    folder = Path(folder)
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        raise ReportError(f"{folder}: not an evaluate stage folder (no metrics.json)")
    datasets = json.loads(metrics.read_text()).get("datasets", {})
    out: dict[str, list[tuple[str, bool]]] = {}
    for name in datasets:
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            raise ReportError(f"{path}: listed in metrics.json but missing")
        rows = []
        for line_no, row in enumerate(iter_jsonl(path), start=1):
            if not isinstance(row.get("id"), str) or not isinstance(row.get("correct"), bool):
                raise ReportError(f"{path}: line {line_no} lacks a string 'id' and a boolean 'correct'")
            if key != "correct" and not isinstance(row.get(key), bool):
                rows = None
                break
            rows.append((row["id"], row[key]))
        if rows is not None:
            out[name] = rows
    return out


def sound_methods(evals: Mapping[str, str | Path]) -> dict[str, str]:
    """``dataset -> "exact" | "verifier"``: how sound accuracy was judged (from the records)."""
    out: dict[str, str] = {}
    for folder in evals.values():
        metrics = Path(folder) / "metrics.json"
        for name, s in json.loads(metrics.read_text()).get("datasets", {}).items():
            if s.get("sound_method"):
                out.setdefault(name, s["sound_method"])
    return out


DISPLACEMENT_KEYS = ("displacement_pairs", "logps_chosen_before", "logps_chosen_after", "logps_chosen_delta",
                     "logps_rejected_before", "logps_rejected_after", "logps_rejected_delta",
                     "logp_token_chosen_before", "logp_token_chosen_after", "logp_token_rejected_before",
                     "logp_token_rejected_after", "share_chosen_logp_fell")


def displacement_rows(evals: Mapping[str, str | Path]) -> list[dict[str, Any]]:
    """Per evaluated DPO model, the DPO stage's likelihood-displacement metrics (``training.dpo``): found
    through the evaluate folder's manifest (``inputs.model``, a key of ``<artifacts>/dpo/``). Models that
    are not DPO stages, or DPO runs from before the diagnostic, give no row."""
    rows = []
    for label, folder in evals.items():
        try:
            key = Manifest.load(folder).inputs["model"]
            m = Manifest.load(Path(folder).parent.parent / "dpo" / key).metrics or {}
        except (OSError, KeyError, TypeError, ValueError):
            continue
        if all(k in m for k in DISPLACEMENT_KEYS):
            rows.append({"model": label, **{k: m[k] for k in DISPLACEMENT_KEYS}})
    return rows


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def build_report(results: EvalResults, *, reference: str = "sft", samples: int = 2000, seed: int = 0,
                 level: float = 0.95, test: Literal["exact", "chi2"] = "exact") -> dict[str, Any]:
    """The report as JSON-able data: one row per (model, dataset), datasets in first-seen order."""
    models = list(results)
    datasets = list(dict.fromkeys(d for label in models for d in results[label]))
    ref = results.get(reference)
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        ref_correct = dict(ref[dataset]) if ref is not None and dataset in ref else None
        for label in models:
            if dataset not in results[label]:
                continue
            pairs = list(results[label][dataset])
            est = accuracy([c for _, c in pairs], samples=samples, seed=seed, level=level)
            row: dict[str, Any] = {"model": label, "dataset": dataset, "n": est.n,
                                   "correct": sum(c for _, c in pairs), "accuracy": _num(est.mean),
                                   "ci_low": _num(est.low), "ci_high": _num(est.high), "vs": None,
                                   "n_paired": None, "diff": None, "diff_low": None, "diff_high": None,
                                   "p_value": None, "b": None, "c": None}
            if ref_correct is not None and label != reference:
                common = [(c, ref_correct[i]) for i, c in pairs if i in ref_correct]
                if common:
                    a = [x for x, _ in common]
                    b = [y for _, y in common]
                    diff = paired_difference(a, b, samples=samples, seed=seed, level=level)
                    mc = mcnemar(a, b, method=test)
                    row.update(vs=reference, n_paired=len(common), diff=diff.mean, diff_low=diff.low,
                               diff_high=diff.high, p_value=mc.p_value, b=mc.b, c=mc.c)
            rows.append(row)
    return {"reference": reference if ref is not None else None, "level": level, "bootstrap_samples": samples,
            "seed": seed, "test": test, "models": models, "datasets": datasets, "rows": rows}


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}"


def _signed(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:+.1f}"


def format_p(p: float | None) -> str:
    """A p-value for a table: 3 decimals, ``<0.001`` below that, a dash when missing."""
    if p is None:
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(rows: Sequence[Mapping[str, Any]], level: int, vs: str, what: str = "accuracy") -> list[str]:
    lines = [f"| model | dataset | {what} | {level}% CI | n | Δ vs {vs} | Δ {level}% CI | McNemar p |",
             "| --- | --- | ---: | --- | ---: | ---: | --- | ---: |"]
    for r in rows:
        ci = DASH if r["ci_low"] is None else f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        if r["diff"] is None:
            d = dci = p = DASH
        else:
            d = _signed(r["diff"]) + (f" (n={r['n_paired']})" if r["n_paired"] != r["n"] else "")
            dci = f"[{_signed(r['diff_low'])}, {_signed(r['diff_high'])}]"
            p = format_p(r["p_value"])
        lines.append(f"| {r['model']} | {r['dataset']} | {_pct(r['accuracy'])} | {ci} | {r['n']} | {d} | {dci} | {p} |")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.json`` as Markdown: the full table, sound accuracy, then accuracy by model × dataset."""
    ref = report.get("reference")
    level = round(100 * report["level"])
    test = "exact" if report.get("test", "exact") == "exact" else "χ² (continuity-corrected)"
    lines = ["# Evaluation report", ""]
    intro = (f"Accuracy in %, with {level}% percentile-bootstrap CI ({report['bootstrap_samples']} "
             f"resamples, seed {report['seed']}).")
    if ref:
        intro += (f" Δ = accuracy − {ref} on the problems both answered, in percentage points, with its "
                  f"paired bootstrap CI and McNemar's {test} p-value.")
    lines += [intro, ""]
    vs = ref or "reference"
    lines += _table(report["rows"], level, vs)
    if report.get("sound_rows"):
        methods = report.get("sound_methods", {})
        how = "; ".join(f"{d}: {'exact (the generator knows every step)' if m == 'exact' else 'judged by the verifier'}"
                        for d, m in methods.items())
        lines += ["", "## Sound accuracy", "",
                  "The share of outputs whose final answer is right *and* whose steps are right "
                  f"({how}). Same CIs and paired tests as above.", ""]
        lines += _table(report["sound_rows"], level, vs, "sound accuracy")
    if report.get("displacement"):
        lines += ["", "## Likelihood displacement (DPO models)", "",
                  "Mean log-probability (summed over the response's tokens; per token in brackets) of the chosen and "
                  "the rejected responses of the training pairs, under the policy before DPO (= the reference) and "
                  "after it. A chosen Δ below 0 is displacement: DPO lowered the chosen response too.", "",
                  "| model | pairs | chosen before | chosen after | chosen Δ | rejected before | rejected after "
                  "| rejected Δ | chosen fell |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["displacement"]:
            lines.append(
                f"| {r['model']} | {r['displacement_pairs']} | {r['logps_chosen_before']:.2f} "
                f"({r['logp_token_chosen_before']:.3f}) | {r['logps_chosen_after']:.2f} "
                f"({r['logp_token_chosen_after']:.3f}) | {r['logps_chosen_delta']:+.2f} | "
                f"{r['logps_rejected_before']:.2f} ({r['logp_token_rejected_before']:.3f}) | "
                f"{r['logps_rejected_after']:.2f} ({r['logp_token_rejected_after']:.3f}) | "
                f"{r['logps_rejected_delta']:+.2f} | {100 * r['share_chosen_logp_fell']:.0f}% |")
    lines += ["", "## Accuracy (%) by model", ""]
    lines.append("| model | " + " | ".join(report["datasets"]) + " |")
    lines.append("| --- |" + " ---: |" * len(report["datasets"]))
    by = {(r["model"], r["dataset"]): r for r in report["rows"]}
    for m in report["models"]:
        cells = [_pct(by[(m, d)]["accuracy"]) if (m, d) in by else DASH for d in report["datasets"]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars (datasets on x, one bar per model) with CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models, datasets = report["models"], report["datasets"]
    by = {(r["model"], r["dataset"]): r for r in report["rows"]}
    x = np.arange(len(datasets))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(datasets) * max(len(models), 1) / 2 + 2), 4))
    for j, m in enumerate(models):
        acc, lo, hi = [], [], []
        for d in datasets:
            r = by.get((m, d))
            a = r["accuracy"] if r and r["accuracy"] is not None else float("nan")
            acc.append(100 * a)
            lo.append(100 * (a - r["ci_low"]) if r and r["ci_low"] is not None else 0.0)
            hi.append(100 * (r["ci_high"] - a) if r and r["ci_high"] is not None else 0.0)
        ax.bar(x + (j - (len(models) - 1) / 2) * width, acc, width, yerr=[lo, hi], capsize=3, label=m)
    ax.set_xticks(x, datasets)
    ax.set_ylabel(f"accuracy (%), {round(100 * report['level'])}% CI")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    ax.set_title("Accuracy by model")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """``<model>/<dataset>/accuracy`` (and ``diff``, ``p_value`` against the reference) for MLflow."""
    out: dict[str, float] = {}
    for prefix, rows in (("", report["rows"]), ("sound_", report.get("sound_rows") or [])):
        for r in rows:
            stem = f"{r['model']}/{r['dataset']}"
            for key in ("accuracy", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "p_value"):
                if r[key] is not None:
                    out[f"{stem}/{prefix}{key}"] = r[key]
    for r in report.get("displacement") or []:
        for key in ("logps_chosen_delta", "logps_rejected_delta", "share_chosen_logp_fell"):
            out[f"{r['model']}/displacement/{key}"] = r[key]
    return out


