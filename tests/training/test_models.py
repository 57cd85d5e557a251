"""Model loading: dtypes, LoRA configs, 4-bit NF4 on CPU, merging adapters, materialising model refs."""

from __future__ import annotations

import pytest
import torch

from conf.schema import LoraConfig
from training.modelref import ModelRef
from training.models import (
    load_model,
    load_tokenizer,
    materialize_ref,
    merge_adapter,
    peft_lora_config,
    resolve_dtype,
)


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("auto", device="cpu") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8")


def test_peft_lora_config_maps_fields():
    cfg = peft_lora_config(LoraConfig(r=4, alpha=8, dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (4, 8, 0.1)
    assert set(cfg.target_modules) == {"q_proj", "v_proj"}
    assert peft_lora_config(LoraConfig()).target_modules == "all-linear"


def test_load_tokenizer_left_padding_and_pad_token(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    assert tok.padding_side == "left" and tok.pad_token == "<|endoftext|>"
    assert load_tokenizer(tiny_model_dir, padding_side="right").padding_side == "right"


def test_load_model_rejects_unknown_quantization(tiny_model_dir):
    with pytest.raises(ValueError, match="quantization"):
        load_model(tiny_model_dir, quantization="8bit")


def test_4bit_nf4_on_cpu_trains_a_lora(tiny_model_dir):
    import bitsandbytes as bnb
    from peft import get_peft_model

    model = load_model(tiny_model_dir, dtype="float32", quantization="4bit", for_training=True)
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4"
    model = get_peft_model(model, peft_lora_config(LoraConfig(r=4, alpha=8, dropout=0.0)))
    ids = torch.randint(3, 300, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _adapter(base, folder, seed=0):
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(base, dtype="float32"), peft_lora_config(LoraConfig(r=4, alpha=8)))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    model.save_pretrained(folder)
    return model


def test_merge_adapter_matches_base_plus_adapter(tiny_model_dir, tmp_path):
    peft_model = _adapter(tiny_model_dir, tmp_path / "adapter").eval()
    out = merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged", dtype="float32")
    merged = load_model(out, dtype="float32").eval()
    base = load_model(tiny_model_dir, dtype="float32").eval()
    ids = torch.randint(3, 300, (1, 10))
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        assert not torch.allclose(base(input_ids=ids).logits, want, atol=1e-4)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (out / "tokenizer_config.json").is_file()


def test_materialize_ref(tiny_model_dir, tmp_path):
    assert materialize_ref(ModelRef(base=str(tiny_model_dir)), tmp_path / "x") == str(tiny_model_dir)
    assert not (tmp_path / "x").exists()
    assert materialize_ref(ModelRef(base="hub/id", merged=str(tiny_model_dir)), tmp_path / "x") == str(
        tiny_model_dir
    )
    with pytest.raises(FileNotFoundError, match="merged"):
        materialize_ref(ModelRef(base="hub/id", merged=str(tmp_path / "missing")), tmp_path / "x")
    _adapter(tiny_model_dir, tmp_path / "adapter")
    ref = ModelRef(base=str(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    path = materialize_ref(ref, tmp_path / "merged", dtype="float32")
    assert path == str(tmp_path / "merged") and (tmp_path / "merged" / "config.json").is_file()
