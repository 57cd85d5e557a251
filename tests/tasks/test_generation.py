"""tasks.generation.engine: the pure helpers, the HF engine, and the vLLM engine (really run in .venv-vllm)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from conf.schema import VLLMConfig
from tasks.generation.engine import (
    ROOT,
    Generation,
    SampledLogprobs,
    VLLMError,
    chat_prompt,
    derive_seed,
    eos_ids,
    generate,
    parse_worker_output,
    sequence_stats,
    vllm_env,
    vllm_python,
    vllm_request,
    worker_timing,
)
from training.modelref import ModelRef

HAS_VLLM = vllm_python(VLLMConfig()).exists()
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason=f"no vLLM environment at {vllm_python(VLLMConfig())} "
                                                     "(run `make setup`)")
QUESTIONS = ["Natalia sold 48 clips in April and half as many in May.", "Weng earns $12 an hour.", "What is 7 + 5?"]
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
VCFG = VLLMConfig(dtype="float32", max_lora_rank=16, enforce_eager=True)  # no compile: starts faster


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [chat_prompt(tokenizer, q, INSTRUCTION) for q in QUESTIONS]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, tmp_path_factory):
    """A random (non-zero) rank-8 LoRA on the tiny model, and the same merged into plain weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                  init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    peft_model.merge_and_unload().save_pretrained(root / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "merged")
    return root / "adapter", root / "merged"


@pytest.fixture(scope="module")
def eos_model(tiny_model_dir, adapter_dirs, prompts, tmp_path_factory):
    """The tiny model with a second EOS in ``generation_config``: the token that the adapter's greedy
    output of prompt 0 has at position 3, so that prompt stops early (and others may run to length)."""
    ref = ModelRef(base=str(tiny_model_dir), adapter=str(adapter_dirs[0]))
    stop_token = _greedy_tokens(ref, prompts[0], 6)[3]
    path = tmp_path_factory.mktemp("eos") / "model"
    shutil.copytree(tiny_model_dir, path)
    gc = json.loads((path / "generation_config.json").read_text())
    gc["eos_token_id"] = [gc["eos_token_id"], stop_token]
    (path / "generation_config.json").write_text(json.dumps(gc))
    return ModelRef(base=str(path), adapter=str(adapter_dirs[0])), stop_token


def _greedy_tokens(ref: ModelRef, prompt: str, k: int) -> list[int]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ref.base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ref.base), ref.adapter)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=k, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


# ------------------------------------------------------------------------------------------ pure


def test_chat_prompt_uses_template_instruction_and_few_shot(tokenizer):
    p = chat_prompt(tokenizer, "What is 2+3?", "Box it.", few_shot=[("What is 1+1?", "1+1=2. \\boxed{2}")])
    assert p == ("<|im_start|>user\nWhat is 1+1?\nBox it.<|im_end|>\n<|im_start|>assistant\n1+1=2. \\boxed{2}"
                 "<|im_end|>\n<|im_start|>user\nWhat is 2+3?\nBox it.<|im_end|>\n<|im_start|>assistant\n")
    assert chat_prompt(tokenizer, "Q?", None) == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("tokens", "logprobs", "eos", "expected"),
    [
        ([5, 6, 7], [-1.0, -2.0, -0.5], [9], (3, -3.5, "length")),  # no EOS: all tokens
        ([5, 9, 0, 0], [-1.0, -0.25, -8.0, -8.0], [9], (2, -1.25, "stop")),  # EOS counted, padding not
        ([9, 0], [-0.5, -3.0], [9], (1, -0.5, "stop")),  # EOS first
        ([5, 4, 9], [-1.0, -1.0, -1.0], [9, 4], (2, -2.0, "stop")),  # second EOS id stops first
        ([5, 6], [-1.0, float("-inf")], [9], (2, float("-inf"), "length")),  # -inf kept as it comes
    ],
)
def test_sequence_stats(tokens, logprobs, eos, expected):
    assert sequence_stats(tokens, logprobs, eos) == expected


def test_eos_ids_merges_tokenizer_and_generation_config():
    class Tok:
        eos_token_id = 3

    class GC:
        eos_token_id = [3, 7]

    assert eos_ids(Tok(), GC()) == [3, 7]
    GC.eos_token_id = 8
    assert eos_ids(Tok(), GC()) == [3, 8]
    assert eos_ids(Tok(), None) == [3]


def test_generation_make_mean_and_empty():
    g = Generation.make("x", 4, -2.0, "stop")
    assert g.logprob_mean == -0.5
    assert math.isnan(Generation.make("", 0, 0.0, "stop").logprob_mean)


def test_derive_seed_is_stable_distinct_and_31_bit():
    assert derive_seed(0, "shard", 1) == derive_seed(0, "shard", 1)
    seeds = {derive_seed(s, "shard", i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**31 for s in seeds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0, "n": 2}, "greedy"),
        ({"engine": "tgi"}, "unknown engine"),
        ({"top_k": 0}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, message):
    args = {"engine": "hf", "n": 1, "temperature": 0.7, "max_tokens": 4, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        generate(ModelRef(base="/nonexistent"), ["p"], **args)


def test_vllm_missing_interpreter_says_what_to_do(tmp_path):
    cfg = VLLMConfig(python=str(tmp_path / "nope" / "python"))
    with pytest.raises(FileNotFoundError, match=r"make setup.*engine=hf"):
        generate(ModelRef(base="/x"), ["p"], engine="vllm", n=1, temperature=0, max_tokens=4, seed=0, vllm=cfg)


def test_vllm_worker_failure_surfaces_stderr(tiny_model_dir):
    """The main interpreter has no vLLM: the worker dies on import and the error shows why."""
    cfg = VLLMConfig(python=sys.executable)
    with pytest.raises(VLLMError, match=r"(?s)exit 1.*No module named 'vllm'"):
        generate(ModelRef(base=str(tiny_model_dir)), ["p"], engine="vllm", n=1, temperature=0, max_tokens=4,
                 seed=0, vllm=cfg, progress=False)


def test_vllm_python_resolves_against_project_root():
    assert vllm_python(VLLMConfig()) == ROOT / ".venv-vllm" / "bin" / "python"
    assert vllm_python(VLLMConfig(python="/opt/v/bin/python")) == Path("/opt/v/bin/python")


def test_vllm_env_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    env = vllm_env(VLLMConfig(env={"VLLM_CPU_KVCACHE_SPACE": "4"}), on_cuda=False)
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT)
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in vllm_env(VLLMConfig(), on_cuda=True)


def test_vllm_request_modes_and_rank_check(tiny_model_dir, adapter_dirs, tmp_path):
    adapter, merged = adapter_dirs
    ref = ModelRef(base=str(tiny_model_dir), adapter=str(adapter), merged=str(merged))
    kw = dict(n=2, temperature=0.5, top_p=0.9, top_k=-1, max_tokens=8, seed=3, workdir=tmp_path)
    lora = vllm_request(ref, ["a", "b"], VCFG, adapter_mode="lora", **kw)
    assert (lora["model"], lora["lora"], lora["engine"]["enable_lora"]) == (str(tiny_model_dir), str(adapter), True)
    assert len(set(lora["seeds"])) == 2
    assert lora["engine"]["enable_chunked_prefill"] is False  # CPU + per-request seeds (see module doc)
    m = vllm_request(ref, ["a"], VCFG, adapter_mode="merged", **kw)
    assert (m["model"], m["lora"], m["engine"]["enable_lora"]) == (str(merged), None, False)
    assert vllm_request(ref, ["a"], VLLMConfig(per_request_seed=False), adapter_mode="merged", **kw)["seeds"] is None
    with pytest.raises(ValueError, match="max_lora_rank"):
        vllm_request(ref, ["a"], VLLMConfig(max_lora_rank=4), adapter_mode="lora", **kw)


def test_parse_worker_output_orders_and_checks(tmp_path):
    out = tmp_path / "out.jsonl"
    rec = {"text": "t", "n_tokens": 2, "logprob_sum": float("nan"), "finish_reason": "length"}
    out.write_text(json.dumps({"i": 1, "outputs": [rec]}) + "\n" + json.dumps({"i": 0, "outputs": [rec | {
        "logprob_sum": -1.0}]}) + "\n")
    got = parse_worker_output(out, 2)
    assert got[0][0].logprob_mean == -0.5 and math.isnan(got[1][0].logprob_sum)
    with pytest.raises(VLLMError, match="lacks 1 of 3"):
        parse_worker_output(out, 3)


# ----------------------------------------------------------------------------------------- HF engine


def _hf(ref, prompts, **kw):
    args = dict(engine="hf", n=1, temperature=0.0, max_tokens=6, seed=0, progress=False) | kw
    return generate(ref, prompts, **args)


def test_hf_greedy_logprobs_are_raw_model_logprobs(tiny_model_dir, prompts, tokenizer):
    """logprob_sum equals a teacher-forced forward pass over prompt + output (raw distribution)."""
    import torch
    from transformers import AutoModelForCausalLM

    gens = _hf(ModelRef(base=str(tiny_model_dir)), prompts, batch_size=2)  # 2 batches, left padding
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for prompt, (g,) in zip(prompts, gens, strict=True):
        assert (g.n_tokens, g.finish_reason) == (6, "length")
        assert g.logprob_sum <= 0 and g.logprob_mean == pytest.approx(g.logprob_sum / g.n_tokens)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():  # unbatched greedy continuation, then one forward pass over it
            new = model.generate(torch.tensor([p_ids]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)[0, len(p_ids):].tolist()
            lp = torch.log_softmax(model(torch.tensor([p_ids + new])).logits[0, len(p_ids) - 1:-1].float(), -1)
        assert tokenizer.decode(new, skip_special_tokens=True) == g.text
        expected = lp.gather(-1, torch.tensor(new)[:, None]).sum().item()
        assert g.logprob_sum == pytest.approx(expected, abs=1e-4)


def test_sampled_logprobs_are_pre_temperature(tiny_model_dir, prompts, tokenizer):
    """With temperature 0.5 and top-k the recorder still sees the raw logits (custom processors run
    before transformers' sampling warpers): compare with a teacher-forced forward pass."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([tokenizer(prompts[0], add_special_tokens=False)["input_ids"]])
    rec = SampledLogprobs()
    torch.manual_seed(0)
    with torch.inference_mode():
        seq = model.generate(ids, max_new_tokens=7, do_sample=True, temperature=0.5, top_k=20, eos_token_id=None,
                             pad_token_id=0, num_return_sequences=2, logits_processor=[rec])
        new = seq[:, ids.shape[1]:]
        got = rec.result(new)
        lp = torch.log_softmax(model(seq).logits[:, ids.shape[1] - 1:-1].float(), -1)
    assert got.shape == (2, 7)
    torch.testing.assert_close(got, lp.gather(-1, new[..., None])[..., 0], atol=1e-4, rtol=0)


def test_worker_timing_line():
    text = 'INFO x\n[vllm_worker] timing {"startup_s": 3.5, "generate_s": 1.0, "prompts": 2, "tokens": 9}\n'
    assert worker_timing(text) == {"startup_s": 3.5, "generate_s": 1.0, "prompts": 2, "tokens": 9}
    assert worker_timing("no timing here") is None


def test_hf_sampling_is_seeded(tiny_model_dir, adapter_dirs, prompts):
    ref = ModelRef(base=str(tiny_model_dir), adapter=str(adapter_dirs[0]))
    kw = dict(n=3, temperature=1.0, top_k=50, max_tokens=8)
    a = _hf(ref, prompts, seed=1, **kw)
    assert a == _hf(ref, prompts, seed=1, **kw)
    assert a != _hf(ref, prompts, seed=2, **kw)
    assert [len(x) for x in a] == [3, 3, 3]
    assert len({g.text for g in a[0]}) > 1
    assert all(g.logprob_sum <= 0 and (g.n_tokens == 8) == (g.finish_reason == "length") for x in a for g in x)


def test_hf_adapter_modes_agree_and_adapter_matters(tiny_model_dir, adapter_dirs, prompts):
    adapter, merged = adapter_dirs
    lora = _hf(ModelRef(base=str(tiny_model_dir), adapter=str(adapter)), prompts)
    merged_saved = _hf(ModelRef(base=str(tiny_model_dir), adapter=str(adapter), merged=str(merged)), prompts,
                       adapter_mode="merged")
    merged_mem = _hf(ModelRef(base=str(tiny_model_dir), adapter=str(adapter)), prompts, adapter_mode="merged")
    base = _hf(ModelRef(base=str(tiny_model_dir)), prompts)
    for a, b, c in zip(lora, merged_saved, merged_mem, strict=True):
        assert a[0].text == b[0].text == c[0].text
        assert a[0].logprob_sum == pytest.approx(b[0].logprob_sum, abs=1e-3)
        assert a[0].logprob_sum == pytest.approx(c[0].logprob_sum, abs=1e-3)
    assert [g[0].text for g in lora] != [g[0].text for g in base]


def test_hf_stops_on_generation_config_eos(eos_model, prompts):
    ref, stop_token = eos_model
    (g,) = _hf(ref, prompts[:1], max_tokens=10)[0]
    assert g.finish_reason == "stop" and 1 <= g.n_tokens <= 4  # the stop token is counted
    assert g.logprob_mean == pytest.approx(g.logprob_sum / g.n_tokens)


# --------------------------------------------------------------------------------------- vLLM engine


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_vllm_greedy_matches_hf(eos_model, prompts):
    """Same greedy continuation, token counts, finish reasons (stop via generation_config EOS and
    length) and raw log-probabilities as the HF engine, with the adapter through LoRARequest."""
    ref, _ = eos_model
    kw = dict(n=1, temperature=0.0, max_tokens=10, seed=0, progress=False)
    hf = generate(ref, prompts, engine="hf", **kw)
    vl = generate(ref, prompts, engine="vllm", vllm=VCFG, **kw)
    assert hf[0][0].finish_reason == "stop"
    for h, v in zip(hf, vl, strict=True):
        assert (v[0].text, v[0].n_tokens, v[0].finish_reason) == (h[0].text, h[0].n_tokens, h[0].finish_reason)
        assert v[0].logprob_sum == pytest.approx(h[0].logprob_sum, abs=1e-3)


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_vllm_sampling_is_reproducible(tiny_model_dir, adapter_dirs, prompts):
    ref = ModelRef(base=str(tiny_model_dir), adapter=str(adapter_dirs[0]))
    kw = dict(engine="vllm", n=3, temperature=1.0, top_p=0.95, max_tokens=8, seed=7, vllm=VCFG, progress=False)
    a = generate(ref, prompts, **kw)
    b = generate(ref, prompts, **kw)
    assert a == b
    assert [len(x) for x in a] == [3, 3, 3]
    assert len({g.text for g in a[0]}) > 1
    for g in (g for x in a for g in x):
        assert g.logprob_sum <= 0 and (g.n_tokens == 8) == (g.finish_reason == "length")
        assert g.logprob_mean == pytest.approx(g.logprob_sum / g.n_tokens)
