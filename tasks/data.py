"""The data stage: every configured dataset as ``Problem`` rows (loaders and formats: ``tasks.corpus``).

Writes ``sft.jsonl``, ``pool.jsonl``, ``eval/<name>.jsonl`` (the ``data.validation`` problems held out of
the pool become ``eval/<source>_<validation.name>.jsonl``) and, when a synthetic dataset is generated and
``n_pretrain > 0``, ``pretrain.txt`` (ChatML conversations separated by ``<|endoftext|>``, the base model's
pretraining corpus). Bad rows: :mod:`tasks.corpus.loaders` (``data.on_bad_row``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conf.schema import Config, DatasetSpec
from tasks.common.progress import stage_logger
from tasks.common.records import Problem, write_jsonl
from tasks.corpus.loaders import PRETRAIN_FILE, format_solution, hold_out, load_problems, needs_synthetic

VERSION = "3"


def run(cfg: Config, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): no inputs."""
    return run_data(cfg, out)


def run_data(cfg: Config, out: Path) -> dict[str, Any]:
    """Write sft.jsonl, pool.jsonl, eval/<name>.jsonl (+ pretrain.txt for synthetic data) into ``out``.

    Metrics: ``rows/<file>``, ``rows/<dataset>``, ``skipped/<dataset>/<reason>``, ``skipped_total``.
    """
    data = cfg.data
    out = Path(out)
    skipped: Counter = Counter()
    skipped_rows: list[str] = []
    metrics: dict[str, Any] = {}
    synthetic = None
    if needs_synthetic(data):
        from tasks.corpus.synthetic import corpus_seed, generate_splits, pretrain_documents
        from training.tiny import DOC_SEPARATOR

        synthetic = generate_splits(data.synthetic)
        if data.synthetic.n_pretrain > 0:
            pretrain = [format_solution(p, data.solution_format) for p in synthetic["pretrain"]]
            docs = pretrain_documents(pretrain, data.synthetic.instruction, seed=corpus_seed(data.synthetic))
            tmp = out / (PRETRAIN_FILE + ".tmp")
            tmp.write_text(DOC_SEPARATOR.join(docs), encoding="utf-8")
            os.replace(tmp, out / PRETRAIN_FILE)
            metrics["rows/pretrain"] = len(docs)

    def load_all(specs: list[DatasetSpec]) -> list[Problem]:
        rows: list[Problem] = []
        for spec in specs:
            got = load_problems(spec, data, skipped, synthetic, skipped_rows)
            metrics[f"rows/{spec.name}"] = len(got)
            rows.extend(got)
        return rows

    metrics["rows/sft"] = write_jsonl(out / "sft.jsonl", load_all(data.sft))
    pool, held = hold_out(load_all(data.pool), data)
    metrics["rows/pool"] = write_jsonl(out / "pool.jsonl", pool)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    for name, rows in held.items():
        metrics[f"rows/eval/{name}"] = write_jsonl(out / "eval" / f"{name}.jsonl", rows)
    for spec in data.eval:
        metrics[f"rows/eval/{spec.name}"] = write_jsonl(out / "eval" / f"{spec.name}.jsonl",
                                                        load_all([spec]))
    for key, n in sorted(skipped.items()):
        metrics[f"skipped/{key}"] = n
    metrics["skipped_total"] = sum(skipped.values())
    if skipped:
        metrics["skipped_rows"] = skipped_rows
        counts = ", ".join(f"{k} {n}" for k, n in sorted(skipped.items()))
        listed = "".join(f"\n  {m}" for m in skipped_rows)
        more = f"\n  … and {metrics['skipped_total'] - len(skipped_rows)} more" \
            if metrics["skipped_total"] > len(skipped_rows) else ""
        stage_logger().warning(f"data: skipped {metrics['skipped_total']} bad rows (on_bad_row: skip): "
                               f"{counts}{listed}{more}")
    return metrics
