"""Seconds per DPO step and peak memory: TRL's ``DPOTrainer`` vs ``training.dpo.WeightedDPOTrainer``.

Same random Qwen2 models, same preference data (with a ``weight`` column, which TRL ignores), same
arguments; with and without precomputed reference log-probs. Each measurement runs in its own
subprocess, so the CPU peak (``resource.getrusage`` max RSS) belongs to that configuration alone; on a
GPU the peak is ``torch.cuda.max_memory_allocated``. The step time is the median over the timed steps
(after warm-up); with ``--repeats`` the best median of the repeats is kept (the runs of one row are
interleaved TRL/weighted, so machine load hits both alike). Target: weighted/TRL <= 1.05.
``cpu_ratio`` is the same ratio of process CPU seconds per step (best of the repeats), which a loaded,
shared CPU disturbs less than wall time.

Like with like: both trainers log every step; ``fwd_per_step`` is policy+reference backbone passes per
step (TRL/weighted, counted by a forward hook), ``logs`` the logged rows and ``logs_trl_metrics`` whether
the weighted trainer logs every metric TRL logs.

    python benchmarks/dpo_step.py                      # tiny + small models, CPU
    python benchmarks/dpo_step.py --models small --steps 12 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from gpu_training import StepTimer, build_random_model, build_tokenizer, dpo_rows, peak_memory_gib  # noqa: E402

SHAPES = {
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=4096,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
    "small": dict(
        hidden_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1408,
        vocab_size=8192,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
}


def trainer_args(a, device: str) -> dict:
    """The DPO arguments both trainers get for one configuration."""
    return dict(
        output_dir=a.out,
        max_steps=a.warmup + a.steps,
        per_device_train_batch_size=a.batch,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=False,
        bf16=device == "cuda",
        disable_tqdm=True,
        beta=0.1,
        max_length=a.seq,
        precompute_ref_log_probs=a.precompute,
        seed=0,
    )


def cpu_timer(cpu_times: list[float]):
    """A callback that appends each step's process CPU seconds (less sensitive than wall time to other load)."""
    from transformers import TrainerCallback

    class CpuTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.process_time()

        def on_step_end(self, args, state, control, **kw):
            cpu_times.append(time.process_time() - self.t)

    return CpuTimer()


def count_forwards(trainer) -> dict[str, int]:
    """Backbone passes with / without grad (the like-with-like check), counted by a forward pre-hook."""
    import torch

    forwards = {"policy": 0, "reference": 0}

    def count(module, args, kwargs):
        forwards["policy" if torch.is_grad_enabled() else "reference"] += 1

    trainer.model.get_base_model().model.register_forward_pre_hook(count, with_kwargs=True)
    return forwards


def one(a) -> dict:
    """Run one configuration in this process and return its measurements."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from training.dpo import WeightedDPOConfig, WeightedDPOTrainer
    from training.models import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = load_model(a.model_dir, dtype="bfloat16" if device == "cuda" else "float32", for_training=True)
    prompt_len = a.seq // 4
    rows = dpo_rows(a.batch * (a.warmup + a.steps), prompt_len, a.seq - prompt_len - 10)
    cls, args_cls = (
        (WeightedDPOTrainer, WeightedDPOConfig) if a.trainer == "weighted" else (DPOTrainer, DPOConfig)
    )
    timer = StepTimer()
    cpu_times: list[float] = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer = cls(
        model,
        args=args_cls(**trainer_args(a, device)),
        train_dataset=Dataset.from_list(rows),
        processing_class=build_tokenizer(),
        callbacks=[timer.callback, cpu_timer(cpu_times)],
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    setup_s = time.perf_counter() - t0
    forwards = count_forwards(trainer)
    trainer.train()
    timed = timer.times[a.warmup :]
    logged = [r for r in trainer.state.log_history if "loss" in r]
    return {
        "model": a.model,
        "trainer": a.trainer,
        "precompute": a.precompute,
        "device": device,
        "s_per_step": statistics.median(timed),
        "cpu_s_per_step": statistics.median(cpu_times[a.warmup :]),
        "setup_s": setup_s,
        "peak_mem_gib": peak_memory_gib(device),
        "policy_fwd_per_step": forwards["policy"] / len(timer.times),
        "ref_fwd_per_step": forwards["reference"] / len(timer.times),
        "logged_steps": len(logged),
        "metrics": sorted(set().union(*(r.keys() for r in logged))),
    }


def run_child(model: str, model_dir: Path, trainer: str, precompute: bool, a, work: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        model,
        "--model-dir",
        str(model_dir),
        "--trainer",
        trainer,
        "--out",
        str(work / "out"),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--seq",
        str(a.seq),
        "--batch",
        str(a.batch),
    ] + (["--precompute"] if precompute else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child failed ({model}, {trainer}, precompute={precompute}): rc={proc.returncode}")
    return json.loads(lines[-1][len("RESULT ") :])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny,small")
    p.add_argument("--steps", type=int, default=8, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seq", type=int, default=256, help="prompt + response tokens")
    p.add_argument("--batch", type=int, default=4, help="pairs per step")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    # child mode (one configuration)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--trainer", choices=["trl", "weighted"], help=argparse.SUPPRESS)
    p.add_argument("--precompute", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def compare_row(model: str, precompute: bool, runs: dict[str, list[dict]]) -> dict:
    """One table row from the repeats of both trainers (the best median of each)."""
    best = {t: min(r, key=lambda x: x["s_per_step"]) for t, r in runs.items()}
    return {
        "model": model,
        "precompute_ref": precompute,
        "trl_s_per_step": round(best["trl"]["s_per_step"], 4),
        "weighted_s_per_step": round(best["weighted"]["s_per_step"], 4),
        "ratio": round(best["weighted"]["s_per_step"] / best["trl"]["s_per_step"], 3),
        "cpu_ratio": round(
            min(r["cpu_s_per_step"] for r in runs["weighted"])
            / min(r["cpu_s_per_step"] for r in runs["trl"]),
            3,
        ),
        "trl_peak_gib": round(best["trl"]["peak_mem_gib"], 3),
        "weighted_peak_gib": round(best["weighted"]["peak_mem_gib"], 3),
        # like with like: forwards per step (policy+reference) and logged rows, trl/weighted
        "fwd_per_step": "/".join(
            f"{best[t]['policy_fwd_per_step']:g}+{best[t]['ref_fwd_per_step']:g}" for t in best
        ),
        "logs": "/".join(str(best[t]["logged_steps"]) for t in best),
        "logs_trl_metrics": set(best["trl"]["metrics"]) <= set(best["weighted"]["metrics"]),
    }


def print_table(table: list[dict], a, device: str) -> None:
    mem = "torch.cuda.max_memory_allocated" if device == "cuda" else "max RSS of the run's process"
    print(
        f"\ndevice: {device} | seq {a.seq} | {a.batch} pairs/step | {a.steps} timed steps after {a.warmup} "
        f"warm-up | best of {a.repeats} | peak = {mem} | LoRA r=16 all-linear | weights ~ U{{0.7, 1, 1.6}} | "
        f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    cols = list(table[0])
    widths = [max(len(c), *(len(str(r[c])) for r in table)) for c in cols]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in table:
        print(" | ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(one(a)), flush=True)
        return 0

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = set(models) - set(SHAPES)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {sorted(SHAPES)}")
    table = []
    with tempfile.TemporaryDirectory(prefix="hnsdpo-dpo-bench-") as tmp:
        work = Path(tmp)
        for model in models:
            model_dir = build_random_model(work / model, SHAPES[model], device)
            for precompute in (False, True):
                runs: dict[str, list[dict]] = {"trl": [], "weighted": []}
                for _ in range(a.repeats):
                    for trainer in ("trl", "weighted"):
                        runs[trainer].append(run_child(model, model_dir, trainer, precompute, a, work))
                table.append(compare_row(model, precompute, runs))
                print(json.dumps(table[-1]), flush=True)
    print_table(table, a, device)
    if a.json:
        a.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
