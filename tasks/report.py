"""The report stage: every model × dataset with confidence intervals and paired tests against a reference.

``run(cfg, evals, out)`` takes ``{label: evaluate stage folder}`` (labels such as ``base``,
``sft``, ``dpo-weighted``, ``dpo-random``, ``dpo-uniform``), reads each folder's ``metrics.json`` and
``<dataset>.jsonl`` records, and writes ``report.json``, ``report.md`` and ``report.png`` (bars with
95% CI error bars). Intervals are recomputed here from the per-problem records with the same bootstrap
(``evaluate.bootstrap_samples``, ``evaluate.seed``) as the evaluate stage. Each model is compared to
``evaluate.reference`` (default ``sft``) on the problems both answered: the paired difference with
its bootstrap CI and McNemar's test (``evaluate.mcnemar``). This is the paper's Table 1 (SFT, random
DPO, weighted DPO; uniform DPO as an ablation). Sound accuracy (a right answer through right steps,
``sound`` in the records) gets the same table in ``sound_rows``. One row of ``report.json``::

    {"model": "dpo-weighted", "dataset": "gsm8k_test", "n": 1319, "correct": 850, "accuracy": 0.6444,
     "ci_low": 0.6179, "ci_high": 0.6702, "vs": "sft", "n_paired": 1319, "diff": 0.0227,
     "diff_low": 0.0061, "diff_high": 0.0394, "p_value": 0.0093, "b": 75, "c": 45}

:func:`render_markdown` turns ``report.json`` back into the Markdown (the orchestration publishes it
as a Prefect artifact).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.evaluation.report import (
    ReportError,
    build_report,
    displacement_rows,
    flat_metrics,
    load_eval_dir,
    plot_report,
    render_markdown,
    sound_methods,
)

VERSION = "3"


def run(cfg, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs = ``{label: evaluate folder}``."""
    return run_report(cfg, inputs, out)


def run_report(cfg, evals: Mapping[str, str | Path], out: Path) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.png`` for ``{label: evaluate folder}``."""
    if not evals:
        raise ReportError("run_report: no evaluate folders given")
    ev = cfg.evaluate
    results = {label: load_eval_dir(folder) for label, folder in evals.items()}
    report = build_report(results, reference=ev.reference, samples=ev.bootstrap_samples, seed=ev.seed,
                          test=ev.mcnemar)
    sound = {label: load_eval_dir(folder, "sound") for label, folder in evals.items()}
    if any(sound.values()):
        report["sound_rows"] = build_report(sound, reference=ev.reference, samples=ev.bootstrap_samples,
                                            seed=ev.seed, test=ev.mcnemar)["rows"]
        report["sound_methods"] = sound_methods(evals)
    report["displacement"] = displacement_rows(evals)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    plot_report(report, out / "report.png")
    return flat_metrics(report)
