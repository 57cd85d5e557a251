"""Greedy evaluation speed of the HF engine: LoRA kept vs merged into the base, by prompts per call.

Runs what the evaluate stage runs (``tasks.generation.engine.generate``, temperature 0) on a trained
model stage's folder (an SFT or DPO artifact with ``model.json``) and the first ``--n`` problems of a data
stage's evaluation sets, once per ``MODE:BATCH`` setting, and prints one row per setting with the number of
outputs identical to the first row's (greedy decoding should not depend on either knob)::

    .venv/bin/python benchmarks/eval_engine.py -c conf/ablation-tiny.yaml \\
        --model artifacts/dpo/<key> --data artifacts/data/<key> --n 384 lora:32 merged:32 lora:64 merged:64

| mode | batch | prompts | tokens | s | answers/s | same as first |
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", default="conf/tiny.yaml")
    ap.add_argument("--model", required=True, help="a model stage's folder (with model.json)")
    ap.add_argument("--data", required=True, help="a data stage's folder (with eval/)")
    ap.add_argument("--n", type=int, default=384, help="prompts (the first n of the evaluation sets)")
    ap.add_argument("settings", nargs="+", help="MODE:BATCH, MODE lora or merged")
    args = ap.parse_args(argv)

    from conf.loader import load_config
    from tasks.evaluation.evalsets import load_eval_sets
    from tasks.generation.engine import chat_prompt, generate
    from training.modelref import read_model_ref
    from training.models import load_tokenizer

    cfg = load_config(args.config)
    model = read_model_ref(Path(args.model))
    tok = load_tokenizer(model.tokenizer)
    sets = load_eval_sets(Path(args.data), cfg.evaluate.datasets, None)
    problems = [p for s in sets.values() for p in s][: args.n]
    prompts = [chat_prompt(tok, p.question, cfg.evaluate.instruction, []) for p in problems]
    first: list[str] | None = None
    print("| mode | batch | prompts | tokens | s | answers/s | same as first |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for setting in args.settings:
        mode, _, batch = setting.partition(":")
        if mode not in ("lora", "merged") or not batch.isdigit():
            ap.error(f"bad setting {setting!r}: expected lora:N or merged:N")
        t = time.perf_counter()
        gens = generate(model, prompts, engine="hf", n=1, temperature=0.0, max_tokens=cfg.evaluate.max_tokens,
                        seed=cfg.evaluate.seed, batch_size=int(batch), adapter_mode=mode, progress=False,
                        dtype=cfg.model.dtype)
        took = time.perf_counter() - t
        texts = [g[0].text for g in gens]
        same = "-" if first is None else str(sum(a == b for a, b in zip(first, texts, strict=True)))
        first = first or texts
        tokens = sum(g[0].n_tokens for g in gens)
        print(f"| {mode} | {batch} | {len(prompts)} | {tokens} | {took:.1f} | {len(prompts) / took:.1f} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
