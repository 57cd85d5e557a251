"""How much a QLoRA adapter's sample log-probs move between the 4-bit base it was trained on and the
full-precision base (``sample.base_precision: train`` vs ``full``), on the tiny test model.

A LoRA adapter is trained for a few steps on the NF4 (bitsandbytes 4-bit) base, as QLoRA SFT does; K
samples per prompt are drawn with the adapter on the full-precision base, then every sample is scored
(teacher forcing, :func:`tasks.generation.engine.score_completions`) under both bases::

    .venv/bin/python benchmarks/qlora_base_precision.py --prompts 8 --k 4 --max-tokens 48

Prints the mean/max absolute difference of the per-token mean log-prob and of the sequence sum.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_nf4_adapter(base: Path, tok, out: Path, steps: int) -> Path:
    """A LoRA (r=8) trained ``steps`` steps on the NF4 base, as QLoRA SFT does; saved to ``out``."""
    import torch
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    from training.models import load_model
    from training.prompts import chat_prompt

    torch.manual_seed(0)
    model = load_model(base, dtype="float32", quantization="4bit", for_training=True)
    model = get_peft_model(model, PeftLora(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    text = [chat_prompt(tok, f"What is {i} + {i}?", "Box it.") + f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}"
            for i in range(16)]
    batch = tok(text, return_tensors="pt", padding=True, add_special_tokens=False)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return out


def score_under_both_bases(ref, prompts: list[str], gens) -> dict[str, list]:
    """Every sample scored (teacher forcing) with the adapter on the full-precision and on the NF4 base."""
    from tasks.generation.engine import keep_hf_loaded, score_completions

    flat_p = [p for p, g in zip(prompts, gens, strict=True) for _ in g]
    flat_c = [x.text for g in gens for x in g]
    eos = [x.finish_reason == "stop" for g in gens for x in g]
    rows = {}
    for q in ("none", "4bit"):
        rows[q] = []
        with keep_hf_loaded():
            for p, c, e in zip(flat_p, flat_c, eos, strict=True):
                rows[q] += score_completions(ref, [p], [c], dtype="float32", eos=e, base_quantization=q)
    return rows


def print_summary(rows: dict[str, list], hidden: int, steps: int) -> None:
    d_mean = [abs(a.logprob_mean - b.logprob_mean) for a, b in zip(rows["none"], rows["4bit"], strict=True)
              if math.isfinite(a.logprob_mean) and math.isfinite(b.logprob_mean)]
    d_sum = [abs(a.logprob_sum - b.logprob_sum) for a, b in zip(rows["none"], rows["4bit"], strict=True)]
    full_mean = sum(a.logprob_mean for a in rows["none"]) / len(rows["none"])
    q_mean = sum(b.logprob_mean for b in rows["4bit"]) / len(rows["4bit"])
    ntok = sum(a.n_tokens for a in rows["none"]) / len(rows["none"])
    print(f"tiny model hidden {hidden}, LoRA r=8 trained {steps} steps on the NF4 base; "
          f"{len(d_sum)} samples (mean {ntok:.1f} tokens), scored under both bases")
    print(f"mean log-prob per token: full {full_mean:.4f}, 4-bit {q_mean:.4f}")
    print(f"|Δ per-token mean log-prob|: mean {sum(d_mean) / len(d_mean):.4f}, max {max(d_mean):.4f}")
    print(f"|Δ sequence log-prob sum|:   mean {sum(d_sum) / len(d_sum):.4f}, max {max(d_sum):.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=128)
    args = ap.parse_args(argv)

    from tasks.generation.engine import generate
    from tests.conftest import build_test_model
    from training.modelref import ModelRef
    from training.models import load_tokenizer
    from training.prompts import chat_prompt

    work = Path(tempfile.mkdtemp(prefix="hnsdpo-qlora-"))
    base = build_test_model(work / "base", hidden=args.hidden)
    tok = load_tokenizer(base)
    adapter = train_nf4_adapter(base, tok, work / "adapter", args.steps)
    ref = ModelRef(base=str(base), adapter=str(adapter))
    prompts = [chat_prompt(tok, f"What is {i} + {i + 1}?", "Box it.") for i in range(args.prompts)]
    gens = generate(ref, prompts, engine="hf", n=args.k, temperature=1.0, max_tokens=args.max_tokens, seed=0,
                    dtype="float32", progress=False)
    print_summary(score_under_both_bases(ref, prompts, gens), args.hidden, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
