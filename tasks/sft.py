"""SFT stage: LoRA/QLoRA fine-tuning of the base model on the SFT corpus.

Reads ``<base>/model.json`` and ``<data>/sft.jsonl`` (``Problem`` rows; rows without a ``solution``
are skipped and counted), trains with :func:`training.sft.train_sft`, and writes into ``out``::

    model.json     {"base": "../../base/1a2b/model", "adapter": "adapter", "merged": "merged"}
    adapter/       the PEFT adapter (+ tokenizer)
    merged/        base (full precision) + adapter merged, when ``sft.merge``
    metrics.jsonl  one row per logging step: {"step": 10, "loss": 1.93, "learning_rate": ..., ...}

``checkpoints/`` exists only while training: a killed run resumes from it when called again on the
same ``out`` (``build_stage(..., resume_dir=True)`` keeps that folder) and it is deleted at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conf import Config
from tasks.common.records import Problem, read_records
from training.modelref import read_model_ref, write_model_ref

VERSION = "1"


def run(cfg: Config, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs ``base``, ``data``."""
    return run_sft(cfg, inputs["base"], inputs["data"], out, callbacks)


def sft_examples(problems: Sequence[Problem], instruction: str) -> tuple[list[dict], int]:
    """Conversational prompt/completion rows for the problems that have a solution; also the skipped count."""
    from training.sft import sft_example  # torch and transformers: imported when the stage runs

    rows = [
        sft_example(p.question, p.solution, instruction)
        for p in problems
        if p.solution and p.solution.strip()
    ]
    return rows, len(problems) - len(rows)


def run_sft(cfg: Config, base_dir: Path, data_dir: Path, out: Path, callbacks: Sequence[Any] = ()) -> dict:
    """Train the SFT LoRA into ``out``; returns metrics (losses, steps, seconds, tokens/s)."""
    from training.models import materialize_input, merge_adapter  # torch: imported when the stage runs
    from training.sft import train_sft

    out = Path(out)
    ref = read_model_ref(base_dir)
    data_file = Path(data_dir) / "sft.jsonl"
    if not data_file.is_file():
        raise FileNotFoundError(f"SFT data not found: {data_file}")
    problems = read_records(data_file, Problem)
    examples, skipped = sft_examples(problems, cfg.sample.instruction)
    if not examples:
        raise ValueError(f"{data_file}: none of the {len(problems)} rows has a solution to train on")
    model_path = materialize_input(ref, out, cfg.model)
    result = train_sft(model_path, examples, cfg.sft, cfg.model, out, callbacks=callbacks)
    merged = None
    if cfg.sft.merge:
        merged = merge_adapter(
            model_path,
            result.adapter_dir,
            out / "merged",
            dtype=cfg.model.dtype,
            revision=cfg.model.revision,
            trust_remote_code=cfg.model.trust_remote_code,
        )
    write_model_ref(out, base=model_path, adapter=result.adapter_dir, merged=merged)
    return {**result.metrics, "skipped_no_solution": skipped, "quantization": cfg.model.quantization}
