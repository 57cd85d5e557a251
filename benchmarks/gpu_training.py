"""GPU training throughput: QLoRA SFT and weighted DPO on a Qwen2.5-1.5B-shaped random model.

Builds a random Qwen2 with Qwen2.5-1.5B's shape (hidden 1536, 28 layers, 12 heads, 2 KV heads,
intermediate 8960, vocab 151936) and a word-level tokenizer with a ChatML template, saves it, reloads
it 4-bit NF4 (or bf16 with ``--no-4bit``), and runs a few steps of

  * SFT (TRL ``SFTTrainer``, LoRA r=16 all-linear, sequences of 1024 tokens, batch 4, gradient
    checkpointing, bf16), and
  * weighted DPO (``training.dpo.WeightedDPOTrainer``, prompt + response = 1024 tokens, batch 4 pairs),
    once with the reference computed on the fly (adapter disabled) and once precomputed,

then prints one table row per phase: seconds/step, tokens/s (after a warm-up step), peak GPU memory
(``torch.cuda.max_memory_allocated``). Needs only torch, transformers, peft, trl, bitsandbytes,
accelerate (and datasets/tokenizers, which they bring); the project's ``training`` package is imported
from this checkout and does not need pydantic.

    python benchmarks/gpu_training.py                 # H100: 1.5B shape, 4-bit, 4 steps per phase
    python benchmarks/gpu_training.py --steps 8 --no-4bit
    python benchmarks/gpu_training.py --tiny          # CPU smoke test of the same code path
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

QWEN25_1_5B = dict(
    hidden_size=1536,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    intermediate_size=8960,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1e6,
    tie_word_embeddings=True,
)
TINY = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=256,
    vocab_size=4096,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
N_WORDS = 3000


def build_tokenizer():
    """A word-level tokenizer (one token per ``w<i>`` word, so lengths are exact) with a ChatML template.

    Use the returned object itself: ``AutoTokenizer`` would reload it from a Qwen2 folder as Qwen2's
    byte-level tokenizer, which does not know these words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + ["[UNK]", "user", "assistant", "system", "\n"])}
    for i in range(N_WORDS):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        additional_special_tokens=SPECIALS[1:2],
    )
    fast.chat_template = CHATML
    return fast


def build_random_model(folder: Path, shape: dict, device: str, seed: int = 0) -> Path:
    """Random-init Qwen2 of ``shape`` (bf16 on CUDA), saved with its tokenizer into ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        **shape, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(N_WORDS)}" for _ in range(n))


def sft_rows(n: int, prompt_len: int, completion_len: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "prompt": [{"role": "user", "content": words(rng, prompt_len)}],
            "completion": [{"role": "assistant", "content": words(rng, completion_len)}],
        }
        for _ in range(n)
    ]


def dpo_rows(n: int, prompt_len: int, response_len: int, seed: int = 0) -> list[dict]:
    from training.dpo import dpo_example

    rng = random.Random(seed)
    return [
        dpo_example(
            words(rng, prompt_len),
            words(rng, response_len),
            words(rng, response_len - 7),
            weight=rng.choice([0.7, 1.0, 1.6]),
        )
        for _ in range(n)
    ]


class StepTimer:
    """A TrainerCallback recording the wall time of each optimizer step (synchronising CUDA)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._sync()
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer._sync()
                timer.times.append(time.perf_counter() - timer._t)

        self.times: list[float] = []
        self.callback = _CB()

    @staticmethod
    def _sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def peak_memory_gib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (process peak)


def reset_peak(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def lora(r: int = 16):
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def common(out: Path, steps: int, batch: int, bf16: bool) -> dict:
    return dict(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=bf16,
        fp16=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def summarize(name: str, timer: StepTimer, tokens_per_step: float, device: str) -> dict:
    times = timer.times[1:] or timer.times  # drop the warm-up step
    sec = sum(times) / len(times)
    return {
        "phase": name,
        "steps_timed": len(times),
        "s_per_step": round(sec, 4),
        "tokens_per_s": round(tokens_per_step / sec, 1),
        "peak_mem_gib": round(peak_memory_gib(device), 2),
    }


def run_sft(model_dir: Path, work: Path, a, device: str) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.models import load_model

    reset_peak(device)
    quant = "4bit" if a.four_bit else "none"
    model = load_model(
        model_dir, dtype=a.dtype, quantization=quant, for_training=True, gradient_checkpointing=True
    )
    rows = sft_rows(a.batch * (a.steps + 1), a.seq // 4, a.seq - a.seq // 4 - 10)
    timer = StepTimer()
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**common(work / "sft", a.steps, a.batch, a.bf16), max_length=a.seq, packing=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=build_tokenizer(),
        peft_config=lora(a.r),
        callbacks=[timer.callback],
    )
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    trainer.train()
    row = summarize(
        f"sft ({quant}, seq {a.seq}, bs {a.batch})", timer, a.batch * sum(lengths) / len(lengths), device
    )
    row["seq_len_mean"] = round(sum(lengths) / len(lengths), 1)
    del trainer, model
    return row


def run_dpo(model_dir: Path, work: Path, a, device: str, precompute: bool) -> dict:
    from datasets import Dataset

    from training.dpo import WeightedDPOConfig, WeightedDPOTrainer
    from training.models import load_model

    reset_peak(device)
    quant = "4bit" if a.four_bit else "none"
    model = load_model(
        model_dir, dtype=a.dtype, quantization=quant, for_training=True, gradient_checkpointing=True
    )
    prompt_len = a.seq // 4
    rows = dpo_rows(a.batch * (a.steps + 1), prompt_len, a.seq - prompt_len - 10)
    timer = StepTimer()
    args = WeightedDPOConfig(
        **common(work / "dpo", a.steps, a.batch, a.bf16),
        beta=0.1,
        max_length=a.seq,
        precompute_ref_log_probs=precompute,
    )
    trainer = WeightedDPOTrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=build_tokenizer(),
        peft_config=lora(a.r),
        callbacks=[timer.callback],
    )
    ds = trainer.train_dataset
    pair_tokens = [
        2 * len(p) + len(c) + len(r)
        for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True)
    ]
    trainer.train()
    ref = "precomputed ref" if precompute else "ref on the fly"
    row = summarize(
        f"weighted dpo ({quant}, {ref}, seq {a.seq}, bs {a.batch} pairs)",
        timer,
        a.batch * sum(pair_tokens) / len(pair_tokens),
        device,
    )
    row["seq_len_mean"] = round(sum(pair_tokens) / len(pair_tokens) / 2, 1)
    del trainer, model
    return row


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}")
    cols = ["phase", "s_per_step", "tokens_per_s", "peak_mem_gib", "seq_len_mean", "steps_timed"]
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per phase (the first is warm-up)")
    p.add_argument(
        "--no-4bit", dest="four_bit", action="store_false", help="LoRA on bf16 weights instead of NF4"
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny shape, runs on CPU: a smoke test of the code path"
    )
    p.add_argument("--seq", type=int, default=None, help="sequence length (default 1024; 96 with --tiny)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--r", type=int, default=16, help="LoRA rank")
    p.add_argument("--phases", default="sft,dpo,dpo-precompute")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p


def library_versions(four_bit: bool) -> dict[str, str] | None:
    """Versions of the training libraries for the header; None (after printing why) when ``four_bit`` needs
    bitsandbytes and it is not installed."""
    import peft
    import torch
    import transformers
    import trl

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
    }
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        if four_bit:
            print("error: bitsandbytes is not installed; install it or pass --no-4bit", file=sys.stderr)
            return None
    return versions


def run_phases(shape: dict, phases: list[str], a, device: str) -> tuple[list[dict], float]:
    """Build the random model in a temporary folder and run every phase on it: (rows, model build seconds)."""
    work = Path(tempfile.mkdtemp(prefix="hnsdpo-gpu-bench-"))
    rows: list[dict] = []
    try:
        t0 = time.perf_counter()
        model_dir = build_random_model(work / "model", shape, device)
        build_s = time.perf_counter() - t0
        for phase in phases:
            if phase == "sft":
                rows.append(run_sft(model_dir, work, a, device))
            else:
                rows.append(run_dpo(model_dir, work, a, device, precompute=phase == "dpo-precompute"))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, build_s


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not a.tiny:
        print(
            "error: no CUDA device visible (torch.cuda.is_available() is False). This benchmark measures GPU "
            "training; run it on a GPU machine, or pass --tiny for a CPU smoke test.",
            file=sys.stderr,
        )
        return 2
    device = "cuda" if cuda else "cpu"
    a.seq = a.seq or (96 if a.tiny else 1024)
    a.bf16 = cuda and torch.cuda.is_bf16_supported()
    a.dtype = "bfloat16" if a.bf16 else "float32"
    shape = TINY if a.tiny else QWEN25_1_5B
    phases = [s.strip() for s in a.phases.split(",") if s.strip()]
    unknown = set(phases) - {"sft", "dpo", "dpo-precompute"}
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}")
    versions = library_versions(a.four_bit)
    if versions is None:
        return 2
    gpu = torch.cuda.get_device_name(0) if cuda else "cpu"
    rows, build_s = run_phases(shape, phases, a, device)
    header = (
        f"device: {gpu} | shape: {'tiny' if a.tiny else 'Qwen2.5-1.5B'} | "
        f"{'NF4 4-bit' if a.four_bit else a.dtype} | LoRA r={a.r} all-linear | grad ckpt | "
        f"model build {build_s:.1f}s | " + " ".join(f"{k} {v}" for k, v in versions.items())
    )
    print_table(rows, header)
    if a.json:
        a.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
