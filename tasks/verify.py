"""The verify stage: score every sampled solution with the MathVerifier.

Reads ``<sample_dir>/samples/shard-*.jsonl`` (``Sample`` rows) and ``<data_dir>/pool.jsonl``
(``Problem`` rows: gold answer and reference solution), calls ``MathVerifier.score_batch`` once over all
samples (``verify.workers`` processes), and writes ``verdicts.jsonl`` plus ``dims.png`` (histograms of the
six error dimensions, wrongness and absurdity) and ``verifier_report.json``, the quality report measured for
this verifier version (its headline numbers are stage metrics: :func:`verifier_info`). One row of ``verdicts.jsonl``::

    {"problem_id": "gsm8k_train-17", "index": 3,
     "dims": {"semantic_alignment": 0.0, "structural_integrity": 0.0, "step_ordering": 0.0,
              "logical_consistency": 0.2, "symbolic_validity": 0.5, "answer_correctness": 1.0},
     "wrongness": 0.46, "absurdity": 0.09, "correct": false, "first_error_step": 2,
     "steps": ["...", "..."], "status": "ok", "notes": ["step 2: 3*4 = 11 (expected 12)"]}

A sample that is not a complete solution with a stated final answer (cut at the token limit, looping,
or with no explicit answer: :func:`verifier.degenerate.degeneracy`, which gets the sample's
``finish_reason``) is marked ``degenerate`` and is never ``correct``: its ``answer_correctness`` is 1,
``structural_integrity`` at least 0.8, and wrongness/absurdity are aggregated again.

Verifier outcomes are values (``status``), never exceptions; the stage itself fails loudly
(:class:`VerifyError`) when the share of ``error``/``timeout`` verdicts is above
``verify.max_error_share``, since such a run would feed the pairs stage mostly unverified samples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.common.records import Problem, Sample, write_jsonl
from tasks.verification.verdicts import (
    attach_ids,
    check_error_share,
    mark_degenerate,
    plot_dims,
    published_report,
    read_problems,
    read_samples,
    verdict_metrics,
    verifier_info,
    verifier_items,
)
from verifier.verdict import Verdict

VERSION = "9"  # bump when this module or the verifier changes what verdicts.jsonl holds


def run(cfg, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs ``sample``, ``data``."""
    return run_verify(cfg, inputs["sample"], inputs["data"], out)


def score(cfg, problems: dict[str, Problem], samples: Sequence[Sample], verifier=None) -> list[Verdict]:
    """Score ``samples`` with ``verifier`` (default ``MathVerifier(cfg.verify)``); ids attached."""
    if verifier is None:
        from verifier import MathVerifier

        verifier = MathVerifier(cfg.verify)
    items = verifier_items(problems, samples)
    verdicts = attach_ids(samples, list(verifier.score_batch(items, workers=cfg.verify.workers)))
    return [mark_degenerate(v, s, cfg.verify) for v, s in zip(verdicts, samples, strict=True)]


def run_verify(cfg, sample_dir: Path, data_dir: Path, out: Path, verifier=None) -> dict[str, Any]:
    """Stage function (see docs/stages.md): writes ``verdicts.jsonl`` and ``dims.png``, returns metrics.

    ``verifier`` (anything with ``score_batch(items, workers=)``) defaults to ``MathVerifier(cfg.verify)``.
    Raises :class:`VerifyError` when error/timeout verdicts exceed ``cfg.verify.max_error_share``.
    """
    samples = read_samples(sample_dir)
    if not samples:
        raise ValueError(f"no samples in {Path(sample_dir) / 'samples'}: nothing to verify")
    problems = read_problems(data_dir)
    verdicts = score(cfg, problems, samples, verifier)
    metrics = {**verdict_metrics(verdicts), **verifier_info()}
    check_error_share(verdicts, cfg.verify.max_error_share)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "verdicts.jsonl", verdicts)
    plot_dims(verdicts, out / "dims.png")
    rep = published_report()
    if rep is not None:  # the verifier's measured quality, logged with the verdicts it qualifies
        (out / "verifier_report.json").write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    return metrics
