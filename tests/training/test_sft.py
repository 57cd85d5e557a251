"""SFT: prompt/completion examples, LoRA training that lowers the loss, resume after a kill, the stage."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from conf import config_from_dict
from conf.schema import LoraConfig, ModelConfig, SFTConfig
from tasks.common.records import Problem, write_jsonl
from tasks.sft import run_sft, sft_examples
from training.modelref import read_model_ref, write_model_ref
from training.models import load_model
from training.sft import (
    build_sft_trainer,
    last_checkpoint,
    read_metrics,
    sft_example,
    summarize_history,
    train_sft,
)

INSTR = "Please reason step by step, and put your final answer within \\boxed{}."
QA = [
    ("What is 2 + 3?", "2 + 3 = 5. #### 5"),
    ("Tom has 4 apples and eats 1. How many are left?", "4 - 1 = 3. #### 3"),
    ("What is 12/60?", "12/60 = 0.2 #### 0.2"),
    ("Weng earns $12 an hour for 50 minutes.", "12/60 = 0.2 per minute. 0.2 x 50 = 10. #### 10"),
]
LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


def small_cfg(**kw):
    base = dict(
        lora=LORA,
        learning_rate=1e-2,
        max_steps=6,
        batch_size=4,
        max_seq_len=96,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        save_steps=2,
        logging_steps=1,
        merge=False,
    )
    base.update(kw)
    return SFTConfig(**base)


def examples():
    return [sft_example(q, a, INSTR) for q, a in QA]


def test_sft_example_and_prompt():
    ex = sft_example("Q?", " A. ", "Do it.")
    assert ex == {
        "prompt": [{"role": "user", "content": "Q?\nDo it."}],
        "completion": [{"role": "assistant", "content": "A."}],
    }


def test_sft_examples_skip_rows_without_solution():
    probs = [
        Problem(id="a", question="Q1", answer="1", solution="S1", source="t", split="sft"),
        Problem(id="b", question="Q2", answer="2", solution=None, source="t", split="sft"),
        Problem(id="c", question="Q3", answer="3", solution="  ", source="t", split="sft"),
    ]
    rows, skipped = sft_examples(probs, "I.")
    assert len(rows) == 1 and skipped == 2 and rows[0]["prompt"][0]["content"] == "Q1\nI."


def test_helpers(tmp_path):
    assert last_checkpoint(tmp_path / "none") is None
    for step in (2, 10, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-12").mkdir()  # incomplete: no trainer_state.json
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
    s = summarize_history([{"loss": 3.0}, {"lr": 1}, {"loss": 1.0}, {"loss": 2.0}])
    assert s == {"loss_first": 3.0, "loss_last": 2.0, "loss_min": 1.0}
    assert summarize_history([])["loss_first"] is None


@pytest.mark.parametrize("quantization", ["none", pytest.param("4bit", marks=pytest.mark.slow)])
def test_train_sft_reduces_loss(tiny_model_dir, tmp_path, quantization):
    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", quantization=quantization)
    steps = 6 if quantization == "none" else 4
    result = train_sft(
        tiny_model_dir, examples(), small_cfg(max_steps=steps, save_steps=100), model_cfg, tmp_path
    )
    m = result.metrics
    assert m["steps"] == steps and m["train_loss_last"] < m["train_loss_first"] - 0.1
    assert m["tokens"] > 0 and m["tokens_per_s"] > 0 and m["resumed_from_step"] == 0
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("completion_only", [True, False])
def test_completion_only_loss_masks_the_prompt(tiny_model_dir, tmp_path, completion_only):
    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    trainer = build_sft_trainer(
        tiny_model_dir, examples(), small_cfg(completion_only_loss=completion_only), model_cfg, tmp_path
    )
    row = trainer.train_dataset[0]
    trained = trainer.processing_class.decode(
        [t for t, lab in zip(row["input_ids"], row["labels"], strict=False) if lab != -100]
    )
    if completion_only:
        assert trained.startswith("2 + 3 = 5. #### 5") and "What is" not in trained
    else:
        assert "What is 2 + 3?" in trained and "#### 5" in trained


def test_progress_callback_replaces_the_raw_log_printer(tiny_model_dir, tmp_path):
    """With the stage's progress line attached, transformers' PrinterCallback (raw log dicts) is gone;
    without it (a script calling build_sft_trainer) the printer stays."""
    from transformers.trainer_callback import PrinterCallback

    from training.sft import ProgressCallback

    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")

    def kinds(trainer):
        return {type(cb) for cb in trainer.callback_handler.callbacks}

    quiet = build_sft_trainer(tiny_model_dir, examples(), small_cfg(), model_cfg, tmp_path / "a",
                              callbacks=[ProgressCallback("sft", mode="off")])
    assert ProgressCallback in kinds(quiet) and PrinterCallback not in kinds(quiet)
    plain = build_sft_trainer(tiny_model_dir, examples(), small_cfg(), model_cfg, tmp_path / "b")
    assert PrinterCallback in kinds(plain)


class Crash(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise RuntimeError(f"simulated kill at step {self.at}")


@pytest.mark.slow
def test_killed_run_resumes_from_checkpoint(tiny_model_dir, tmp_path):
    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    cfg = small_cfg(max_steps=5)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_sft(tiny_model_dir, examples(), cfg, model_cfg, tmp_path, callbacks=[Crash(3)])
    assert last_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    result = train_sft(tiny_model_dir, examples(), cfg, model_cfg, tmp_path)
    assert result.metrics["resumed_from_step"] == 2 and result.metrics["steps"] == 5
    steps_run = [r["step"] for r in result.log_history if "loss" in r]
    assert steps_run == [1, 2, 3, 4, 5]  # history restored from the checkpoint, then steps 3..5
    assert not (tmp_path / "checkpoints").exists()


def test_run_sft_stage(tiny_model_dir, tmp_path):
    base_dir, data_dir, out = tmp_path / "base", tmp_path / "data", tmp_path / "sft"
    for d in (base_dir, data_dir, out):
        d.mkdir()
    write_model_ref(base_dir, base=str(tiny_model_dir))
    write_jsonl(
        data_dir / "sft.jsonl",
        [
            Problem(id=f"p{i}", question=q, answer="x", solution=a, source="t", split="sft")
            for i, (q, a) in enumerate(QA)
        ],
    )
    cfg = config_from_dict(
        {
            "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
            "sft": small_cfg(max_steps=3, merge=True).model_dump(),
            "sample": {"instruction": INSTR},
        }
    )
    metrics = run_sft(cfg, base_dir, data_dir, out)
    assert metrics["steps"] == 3 and metrics["skipped_no_solution"] == 0
    json.dumps(metrics)  # JSON-able for the manifest
    ref = read_model_ref(out)
    assert ref.base == str(tiny_model_dir.resolve()) and ref.adapter.endswith("adapter")
    assert ref.merged.endswith("merged") and not (out / "checkpoints").exists()
    from peft import PeftModel

    ids = torch.randint(3, 300, (1, 12))
    with torch.no_grad():
        merged = load_model(ref.merged, dtype="float32").eval()(input_ids=ids).logits
        peft = PeftModel.from_pretrained(load_model(ref.base, dtype="float32"), ref.adapter).eval()
        torch.testing.assert_close(merged, peft(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
