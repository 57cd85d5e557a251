"""DPO stage: a new LoRA trained with weighted DPO on top of the SFT model's merged weights.

Reads ``<sft>/model.json`` (its ``merged`` folder; when SFT saved none, base + SFT adapter are merged
into ``out/input_model``) and ``<pairs>/pairs.jsonl`` (``Pair`` rows: ``prompt`` is the user turn —
question + instruction — and the chat template is applied here), trains with
:func:`training.dpo.train_dpo`, and writes into ``out``::

    model.json     {"base": "../../sft/9c1e/merged", "adapter": "adapter", "merged": null}
    adapter/       the DPO LoRA (+ tokenizer)
    metrics.jsonl  {"step": 10, "loss": 0.62, "rewards/margins": 0.41, "weight/mean": 1.0, ...}

The strategies ``weighted``/``uniform``/``random`` differ only in the pairs and their weights, so
one trainer serves all three.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conf import Config
from tasks.common.records import Pair, read_records
from training.modelref import read_model_ref, write_model_ref

VERSION = "1"


def run(cfg: Config, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs ``sft``, ``pairs``."""
    return run_dpo(cfg, inputs["sft"], inputs["pairs"], out, callbacks)


def dpo_examples(pairs: Sequence[Pair]) -> list[dict]:
    from training.dpo import dpo_example  # torch and transformers: imported when the stage runs

    return [dpo_example(p.prompt, p.chosen, p.rejected, p.weight) for p in pairs]


def run_dpo(cfg: Config, sft_dir: Path, pairs_dir: Path, out: Path, callbacks: Sequence[Any] = ()) -> dict:
    """Train the DPO LoRA into ``out``; returns metrics (losses, rewards, weight stats, steps, seconds)."""
    from training.dpo import train_dpo  # torch: imported when the stage runs
    from training.models import materialize_input

    out = Path(out)
    pairs_file = Path(pairs_dir) / "pairs.jsonl"
    if not pairs_file.is_file():
        raise FileNotFoundError(f"pairs not found: {pairs_file}")
    pairs = read_records(pairs_file, Pair)
    if not pairs:
        raise ValueError(f"{pairs_file}: no pairs to train on")
    ref = read_model_ref(sft_dir)
    model_path = materialize_input(ref, out, cfg.model)
    result = train_dpo(model_path, dpo_examples(pairs), cfg.dpo, cfg.model, out, callbacks=callbacks)
    write_model_ref(out, base=model_path, adapter=result.adapter_dir)
    strategies = Counter(p.strategy for p in pairs)
    return {
        **result.metrics,
        "strategy": ",".join(sorted(strategies)),
        "quantization": cfg.model.quantization,
    }
