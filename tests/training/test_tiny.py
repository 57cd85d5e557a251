"""The from-scratch tiny model: tokenizer, chat template, save/load round trip, pretraining, base stage."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conf import config_from_dict
from conf.schema import SyntheticConfig, TinyModelConfig
from tasks.corpus.synthetic import generate_split, pretrain_documents
from training.modelref import read_model_ref
from training.tiny import (
    DOC_SEPARATOR,
    IM_END,
    build_tiny_model,
    lr_at,
    pack_blocks,
    render_chat,
    split_documents,
    train_tokenizer,
)

SMALL = TinyModelConfig(vocab_size=400, hidden_size=64, num_layers=1, num_heads=1, num_kv_heads=1,
                        intermediate_size=128, max_position_embeddings=256, block_size=64, batch_size=4,
                        lr=3e-3, warmup_steps=5, max_steps=30, seed=0)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def docs():
    cfg = SyntheticConfig(seed=5, n_pretrain=60, n_sft=0, n_pool=0, n_test=0, min_steps=2, max_steps=3)
    return pretrain_documents(generate_split(cfg, "pretrain"), INSTRUCTION, seed=0)


@pytest.fixture(scope="module")
def built(docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    logs: list[dict] = []
    metrics = build_tiny_model(docs, SMALL, out, log=logs.append)
    return out, metrics, logs


def test_tokenizer_digits_and_specials(docs):
    tok = train_tokenizer(docs, 400)
    ids = tok("Mia has 1234 apples", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert [p for p in pieces if p.strip().isdigit()] == ["1", "2", "3", "4"]
    assert tok.decode(ids) == "Mia has 1234 apples"
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == IM_END and tok.pad_token == "<|endoftext|>" and tok.padding_side == "left"


def test_render_chat_matches_template(docs):
    tok = train_tokenizer(docs, 400)
    msgs = [{"role": "user", "content": "Q?\n" + INSTRUCTION}, {"role": "assistant", "content": "1+1 = 2\n#### 2"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == render_chat(msgs)
    assert tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True) == \
        render_chat(msgs[:1], add_generation_prompt=True)


def test_pack_blocks_and_documents(docs):
    tok = train_tokenizer(docs, 400)
    blocks, labels = pack_blocks(tok, docs, 64)
    total = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs)
    assert blocks.shape == (total // 64, 64) and labels is blocks  # every token in the loss
    assert split_documents(DOC_SEPARATOR.join(docs)) == docs
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks(tok, ["hi"], 64)


def test_assistant_only_labels_mask_the_questions(docs):
    tok = train_tokenizer(docs, 400)
    blocks, labels = pack_blocks(tok, docs, 256, assistant_only=True)
    assert torch.equal(blocks, pack_blocks(tok, docs, 256)[0])  # same tokens, only the labels differ
    flat_ids, flat_labels = blocks.flatten().tolist(), labels.flatten().tolist()
    trained = tok.decode([i for i, lab in zip(flat_ids, flat_labels, strict=True) if lab != -100])
    masked = tok.decode([i for i, lab in zip(flat_ids, flat_labels, strict=True) if lab == -100])
    assert all(lab in (-100, i) for i, lab in zip(flat_ids, flat_labels, strict=True))
    assert "####" in trained and IM_END in trained  # the solutions and their end-of-turn are learnt
    assert "<|im_start|>" not in trained and "Please reason" not in trained  # the questions are not
    assert "Please reason" in masked
    # a block that starts inside a document learns nothing before its first document start
    start = tok.convert_tokens_to_ids("<|im_start|>")
    for row_ids, row_labels in zip(blocks.tolist(), labels.tolist(), strict=True):
        head = row_ids.index(start) if start in row_ids else len(row_ids)
        assert all(lab == -100 for lab in row_labels[:head])
    assert any(row[0] != start for row in blocks.tolist())  # the corpus does cut documents
    # a document without an assistant turn is all masked
    _, lab = pack_blocks(tok, ["<|im_start|>user\nonly a question here, no reply at all<|im_end|>\n"] * 8, 16,
                         assistant_only=True)
    assert (lab == -100).all()


def test_lr_schedule():
    assert lr_at(0, SMALL) == pytest.approx(SMALL.lr / 5)
    assert lr_at(4, SMALL) == pytest.approx(SMALL.lr)
    assert lr_at(29, SMALL) < lr_at(15, SMALL) < lr_at(5, SMALL)
    assert lr_at(SMALL.max_steps, SMALL) == pytest.approx(0.1 * SMALL.lr)


def test_build_trains_and_round_trips(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics, logs = built
    assert metrics["steps"] == 30 and metrics["final_loss"] < metrics["first_loss"] - 1.0
    assert math.isfinite(metrics["final_loss"]) and metrics["params"] > 0 and metrics["cpu_seconds"] > 0
    assert logs[0]["params"] == metrics["params"] and any("loss" in r for r in logs)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    eos = tok.convert_tokens_to_ids(IM_END)
    assert model.config.head_dim == 64 and model.config.model_type == "qwen2"
    assert model.generation_config.eos_token_id == eos == model.config.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.padding_side == "left" and tok.chat_template
    # batched generation with left padding gives the same greedy tokens as one prompt alone
    prompts = [render_chat([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in ("Mia has 3 apples.", "Ben has 12 cards. He buys 4 more cards. How many?")]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc["input_ids"][0, 0] == tok.pad_token_id  # left padded
    with torch.no_grad():
        both = model.generate(**enc, max_new_tokens=8, do_sample=False)
        one = model.generate(**tok(prompts[1:], return_tensors="pt", add_special_tokens=False),
                             max_new_tokens=8, do_sample=False)
    assert both[1, enc["input_ids"].shape[1]:].tolist() == one[0, -8:].tolist()[: both.shape[1] - enc["input_ids"].shape[1]]


def test_training_is_seeded(docs, built, tmp_path):
    _, metrics, _ = built
    cfg = SMALL.model_copy(update={"max_steps": 3})
    a = build_tiny_model(docs, cfg, tmp_path / "a")
    b = build_tiny_model(docs, cfg, tmp_path / "b")
    assert a["final_loss"] == b["final_loss"]


def test_pretrain_resumes_from_checkpoint(docs, tmp_path):
    from training.tiny import build_model, pretrain

    cfg = SMALL.model_copy(update={"max_steps": 4, "warmup_steps": 1})
    tok = train_tokenizer(docs, 400)
    blocks, _ = pack_blocks(tok, docs, cfg.block_size)
    full = pretrain(build_model(tok, cfg), blocks, cfg)

    def crash(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(build_model(tok, cfg), blocks, cfg, log=crash, log_every=1, checkpoint=ckpt, save_every=2)
    assert ckpt.is_file()
    resumed = pretrain(build_model(tok, cfg), blocks, cfg, checkpoint=ckpt, save_every=2)
    assert resumed["resumed_from"] == 2 and resumed["final_loss"] == pytest.approx(full["final_loss"], rel=1e-5)


def test_run_base_both_modes(tmp_path, docs):
    from tasks.base import run_base

    hub = config_from_dict({"model": {"name_or_path": "Qwen/Qwen2.5-1.5B-Instruct"}})
    (tmp_path / "hub").mkdir()
    assert run_base(hub, None, tmp_path / "hub") == {"built": 0}
    assert read_model_ref(tmp_path / "hub").base == "Qwen/Qwen2.5-1.5B-Instruct"

    cfg = config_from_dict({"model": {"build_from_scratch": True, "tiny": {**SMALL.model_dump(), "max_steps": 4}}})
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "base"
    out.mkdir()
    with pytest.raises(FileNotFoundError, match="pretrain.txt"):
        run_base(cfg, data, out)
    (data / "pretrain.txt").write_text(DOC_SEPARATOR.join(docs))
    m = run_base(cfg, data, out)
    assert m["built"] == 1 and m["steps"] == 4
    ref = read_model_ref(out)
    assert ref.base == str((out / "model").resolve()) and ref.adapter is None
    assert json.loads((out / "model.json").read_text())["base"] == "model"
    assert (out / "model" / "config.json").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert len((out / "pretrain_log.jsonl").read_text().splitlines()) >= 1


def test_shared_fixture_model_loads_left_padded(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tok.padding_side == "left" and tok.eos_token == IM_END
    assert model.generation_config.eos_token_id == tok.eos_token_id and model.config.num_hidden_layers == 2


def test_base_stage_builds_what_the_quality_script_builds(tmp_path, docs):
    """No hidden difference between the flow and scripts/tiny_quality.py: the data stage's pretrain.txt
    round-trips to the same documents, and the base stage (checkpointing on) trains the same weights as
    a direct build_tiny_model call on them at the same thread count."""
    from tasks.base import run_base

    assert split_documents(DOC_SEPARATOR.join(docs)) == docs
    tiny = {**SMALL.model_dump(), "max_steps": 6, "warmup_steps": 1}
    cfg = config_from_dict({"model": {"build_from_scratch": True, "tiny": tiny}})
    data, out = tmp_path / "data", tmp_path / "base"
    data.mkdir()
    out.mkdir()
    (data / "pretrain.txt").write_text(DOC_SEPARATOR.join(docs))
    flow = run_base(cfg, data, out)
    script = build_tiny_model(docs, cfg.model.tiny, tmp_path / "script")
    assert flow["final_loss"] == script["final_loss"]
    from safetensors.torch import load_file

    a, b = load_file(out / "model" / "model.safetensors"), load_file(tmp_path / "script" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_ema_is_the_moving_average_and_resumes(docs, tmp_path):
    """With ``ema`` the saved weights are the moving average of the weights after every step from the end
    of warm-up on, and a resumed run ends with the same average as an uninterrupted one."""
    from training.tiny import build_model, pretrain

    cfg = SMALL.model_copy(update={"max_steps": 6, "warmup_steps": 2, "ema": 0.5})
    tok = train_tokenizer(docs, 400)
    blocks, _ = pack_blocks(tok, docs, cfg.block_size)
    torch.manual_seed(0)
    model = build_model(tok, cfg)
    after: list[dict] = []
    pretrain(model, blocks, cfg, progress=lambda s, loss: after.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}))
    expected = dict(after[cfg.warmup_steps - 1])  # the average starts at the step that ends warm-up
    for state in after[cfg.warmup_steps:]:
        expected = {k: 0.5 * expected[k] + 0.5 * v for k, v in state.items()}
    final = model.state_dict()
    assert not torch.equal(final["model.norm.weight"], after[-1]["model.norm.weight"])  # not the last step's
    for k, v in expected.items():
        torch.testing.assert_close(final[k], v)

    def crash(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        pretrain(build_model(tok, cfg), blocks, cfg, log=crash, log_every=1, checkpoint=ckpt, save_every=4)
    torch.manual_seed(0)
    resumed = build_model(tok, cfg)
    assert pretrain(resumed, blocks, cfg, checkpoint=ckpt, save_every=4)["resumed_from"] == 4
    for k, v in expected.items():
        torch.testing.assert_close(resumed.state_dict()[k], v)
