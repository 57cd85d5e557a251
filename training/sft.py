"""Supervised fine-tuning with LoRA/QLoRA through TRL's ``SFTTrainer``.

Each training example is a conversational prompt/completion pair, so the loss covers only the
assistant's solution (TRL's ``completion_only_loss``)::

    {"prompt": [{"role": "user", "content": "Tom has 3 apples ...?\\nPlease reason step by step, ..."}],
     "completion": [{"role": "assistant", "content": "3 + 4 = 7. #### 7"}]}

:func:`train_sft` checkpoints every ``save_steps`` into ``<output_dir>/checkpoints`` and resumes from
the newest complete checkpoint when it finds one (a killed run continues where it stopped), logs every
``logging_steps`` to ``<output_dir>/metrics.jsonl`` and to the caller's callbacks (MLflow is wired by
the caller, never here), and saves the PEFT adapter. The same helpers (:class:`JsonlMetricsCallback`,
:func:`last_checkpoint`, :func:`summarize_history`) serve the DPO trainer.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from training.models import (
    count_parameters,
    load_model,
    load_tokenizer,
    mixed_precision_flags,
    peft_lora_config,
    resolve_dtype,
)
from training.prompts import user_messages, user_turn

METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"

if TYPE_CHECKING:  # conf (pydantic) is not needed at run time: benchmarks import this alone
    from conf.schema import ModelConfig, SFTConfig


def sft_example(question: str, solution: str, instruction: str) -> dict[str, list[dict[str, str]]]:
    """One conversational prompt/completion example (see the module docstring); the user turn is
    :func:`training.prompts.user_turn`, the same as sampling, DPO and evaluation use."""
    return {
        "prompt": user_messages(user_turn(question, instruction)),
        "completion": [{"role": "assistant", "content": solution.strip()}],
    }


class JsonlMetricsCallback(TrainerCallback):
    """Appends every ``Trainer.log`` call as one JSON line ``{"step": …, "epoch": …, **logs}``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")


class ProgressCallback(TrainerCallback):
    """Step, rate, ETA and the last logged loss of a Trainer run (SFT and DPO) through
    :class:`tasks.common.progress.Progress`: a tqdm bar in a terminal, a plain line every 30 s in a log or under
    Prefect (``sft: step 40/150 (27%), 0.52 step/s, ETA 3m32s, loss 1.21``). The trainers' own tqdm bar
    stays off (``disable_tqdm``), so there is one progress display."""

    SHOWN = ("loss", "rewards/margins", "learning_rate")

    def __init__(self, label: str, **progress_kwargs: Any):
        self.label, self.kwargs = label, progress_kwargs
        self.progress: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not getattr(state, "is_world_process_zero", True):
            return
        from tasks.common.progress import Progress

        self.progress = Progress(self.label, total=state.max_steps or None, unit="step", **self.kwargs)
        if state.global_step:
            self.progress.start_at(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None and state.global_step > self.progress.n:
            self.progress.update(state.global_step - self.progress.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs:
            self.progress.set(**{k.split("/")[-1] if k != "loss" else k: round(float(logs[k]), 4)
                                 for k in self.SHOWN if isinstance(logs.get(k), int | float)})

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close()
            self.progress = None


def drop_printer_when_progress(trainer: Any) -> Any:
    """With a :class:`ProgressCallback` attached, remove transformers' ``PrinterCallback`` (with tqdm off it
    prints every log dict raw); the loss is then in the progress line, ``metrics.jsonl`` and MLflow."""
    from transformers.trainer_callback import PrinterCallback

    if any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(PrinterCallback)
    return trainer


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` written by :class:`JsonlMetricsCallback` (empty when absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``checkpoint-<step>`` under ``folder`` that was written completely (has trainer_state)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = []
    for p in folder.glob("checkpoint-*"):
        step = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and step.isdigit() and (p / "trainer_state.json").is_file():
            done.append((int(step), p))
    return max(done)[1] if done else None


def summarize_history(history: Sequence[dict[str, Any]], key: str = "loss") -> dict[str, float | None]:
    """First/last/min of a logged training series (``Trainer.state.log_history`` rows)."""
    values = [
        float(r[key]) for r in history if key in r and r[key] is not None and math.isfinite(float(r[key]))
    ]
    if not values:
        return {f"{key}_first": None, f"{key}_last": None, f"{key}_min": None}
    return {f"{key}_first": values[0], f"{key}_last": values[-1], f"{key}_min": min(values)}


def common_args(cfg: Any, output_dir: Path, dtype: Any, report_to: str | list[str]) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO (``cfg`` is an ``SFTConfig`` or a ``DPOConfig``)."""
    return dict(
        output_dir=str(output_dir / CHECKPOINTS),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=report_to,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        save_only_model=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        **mixed_precision_flags(dtype),
    )


@dataclass
class TrainResult:
    """What a training run returns: where the adapter is and its metrics (JSON-able)."""

    adapter_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)


def run_trainer(trainer: Any, output_dir: Path, adapter_dir: Path, keep_checkpoints: bool) -> TrainResult:
    """Train (resuming from the newest complete checkpoint), save the adapter, summarise the history."""
    resume = last_checkpoint(output_dir / CHECKPOINTS)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    trainer.save_model(str(adapter_dir))
    history = list(trainer.state.log_history)
    tokens = [r["num_tokens"] for r in history if "num_tokens" in r]
    losses = summarize_history(history, "loss")
    metrics: dict[str, Any] = {
        "train_loss_first": losses["loss_first"],
        "train_loss_last": losses["loss_last"],
        "train_loss_min": losses["loss_min"],
        "train_loss_mean": float(out.training_loss),
        "steps": int(trainer.state.global_step),
        "seconds": round(seconds, 3),
        "resumed_from_step": int(resume.name.rsplit("-", 1)[-1]) if resume else 0,
        **count_parameters(trainer.model),
    }
    if tokens and seconds > 0:
        metrics["tokens"] = int(tokens[-1])
        metrics["tokens_per_s"] = round(float(tokens[-1]) / seconds, 2)
    if not keep_checkpoints:
        shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
    return TrainResult(adapter_dir=adapter_dir, metrics=metrics, log_history=history)


def load_for_training(model_path: str | Path, model_cfg: ModelConfig, gradient_checkpointing: bool,
                      **tokenizer_kw: Any) -> tuple[Any, Any]:
    """(tokenizer, model) of ``model_path`` for LoRA training, quantised as ``model_cfg`` says."""
    tokenizer = load_tokenizer(model_path, revision=model_cfg.revision,
                               trust_remote_code=model_cfg.trust_remote_code, **tokenizer_kw)
    model = load_model(model_path, dtype=model_cfg.dtype, quantization=model_cfg.quantization, for_training=True,
                       gradient_checkpointing=gradient_checkpointing, revision=model_cfg.revision,
                       trust_remote_code=model_cfg.trust_remote_code)
    return tokenizer, model


def trainer_inputs(rows: list[dict[str, Any]], tokenizer: Any, lora: Any, output_dir: Path,
                   callbacks: Sequence[TrainerCallback]) -> dict[str, Any]:
    """What the SFT and DPO trainers take alike: the rows as a dataset, the tokenizer, a new LoRA and the
    metrics callback (``output_dir/metrics.jsonl``) before ``callbacks``."""
    from datasets import Dataset

    return {"train_dataset": Dataset.from_list(rows), "processing_class": tokenizer,
            "peft_config": peft_lora_config(lora),
            "callbacks": [JsonlMetricsCallback(output_dir / METRICS_FILE), *callbacks]}


def build_sft_trainer(
    model_path: str | Path,
    examples: Iterable[dict[str, Any]],
    cfg: SFTConfig,
    model_cfg: ModelConfig,
    output_dir: str | Path,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    report_to: str | list[str] = "none",
) -> Any:
    """A TRL ``SFTTrainer`` with a new LoRA (QLoRA when ``model_cfg.quantization == "4bit"``)."""
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    output_dir = Path(output_dir)
    rows = list(examples)
    if not rows:
        raise ValueError("SFT: no training examples")
    dtype = resolve_dtype(model_cfg.dtype)
    tokenizer, model = load_for_training(model_path, model_cfg, cfg.gradient_checkpointing, padding_side="right")
    args = TrlSFTConfig(
        **common_args(cfg, output_dir, dtype, report_to),
        max_length=cfg.max_seq_len,
        completion_only_loss=cfg.completion_only_loss,
        packing=False,
    )
    return drop_printer_when_progress(SFTTrainer(
        model=model, args=args, **trainer_inputs(rows, tokenizer, cfg.lora, output_dir, callbacks)))


def train_sft(
    model_path: str | Path,
    examples: Iterable[dict[str, Any]],
    cfg: SFTConfig,
    model_cfg: ModelConfig,
    output_dir: str | Path,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    report_to: str | list[str] = "none",
    keep_checkpoints: bool = False,
) -> TrainResult:
    """Train a LoRA (QLoRA when ``model_cfg.quantization == "4bit"``) on prompt/completion examples.

    Writes ``output_dir/adapter`` (PEFT adapter + tokenizer), ``output_dir/metrics.jsonl`` and, while
    running, ``output_dir/checkpoints`` (deleted at the end unless ``keep_checkpoints``).
    """
    rows = list(examples)
    trainer = build_sft_trainer(
        model_path, rows, cfg, model_cfg, output_dir, callbacks=callbacks, report_to=report_to
    )
    output_dir = Path(output_dir)
    result = run_trainer(trainer, output_dir, output_dir / "adapter", keep_checkpoints)
    result.metrics["examples"] = len(rows)
    return result
