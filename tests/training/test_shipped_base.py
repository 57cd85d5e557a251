"""The testbed's shipped base (assets/ablation-tiny-base): the weights the ablation starts from on every machine.

The base is trained once (scripts/build_tiny_base.py) because a from-scratch base depends on the CPU's
floating-point kernels (docs/method.md, "The testbed's base is a file"). These tests hold the file to its
provenance and to the profile that loads it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from conf import load_config
from conf.loader import config_hash
from tasks.common.artifacts import describe_files
from tasks.orchestration.plan import pretrain_corpus

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "conf" / "ablation-tiny.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(PROFILE)


@pytest.fixture(scope="module")
def base(cfg) -> Path:
    assert not cfg.model.build_from_scratch
    path = (ROOT / cfg.model.name_or_path).resolve()
    assert path.is_dir(), path
    return path


@pytest.fixture(scope="module")
def provenance(base) -> dict:
    return json.loads((base / "provenance.json").read_text())


def test_the_files_are_the_ones_the_provenance_describes(base, provenance):
    """Every shipped file's sha256 is recorded: a re-trained or edited base cannot pass for this one."""
    files = {name: d["sha256"] for name, d in describe_files(base).items()
             if name not in ("provenance.json", "README.md")}
    assert files == provenance["files"]


def test_the_profile_describes_the_recipe_the_base_was_trained_with(cfg, provenance):
    """conf/ablation-tiny.yaml keeps the recipe under model.tiny and the corpus under data.synthetic: with
    build_from_scratch switched on it would train this very base (same recipe, same corpus settings, same
    solution format), so `scripts/build_tiny_base.py -o model.build_from_scratch=true` rebuilds it."""
    scratch = load_config(PROFILE, ["model.build_from_scratch=true"])
    assert provenance["recipe"] == scratch.model.tiny.model_dump(mode="json")
    corpus = pretrain_corpus(scratch)
    assert provenance["corpus"]["synthetic"] == corpus["synthetic"]
    assert provenance["corpus"]["solution_format"] == corpus["solution_format"] == cfg.data.solution_format
    assert provenance["corpus_key"] == config_hash(provenance["corpus"])
    assert 0 < provenance["step"] <= provenance["recipe"]["max_steps"]


def test_the_base_answers_in_the_format_the_instruction_asks_for(cfg, base, provenance):
    """Greedy on synthetic problems rendered exactly as the SFT and sample stages render them: the base was
    pretrained on the profile's solution format, so its outputs end in the \\boxed{} the instruction asks for."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.corpus.synthetic import generate_problem
    from training.prompts import chat_prompt, prompt_token_ids

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == provenance["params"]
    syn = cfg.data.synthetic
    rng = random.Random(7)  # problems as the data stage draws them (its splits are sized for 80,000 problems)
    problems = [generate_problem(rng, steps, syn.max_value, syn.traps, syn.round_share) for steps in (2, 3, 4)]
    boxed = 0
    for p in problems:
        ids = torch.tensor([prompt_token_ids(tok, chat_prompt(tok, p.question, cfg.sample.instruction))])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=160, do_sample=False, pad_token_id=tok.pad_token_id)
        completion = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        boxed += "\\boxed{" in completion
    assert "\\boxed{}" in cfg.sample.instruction and cfg.data.solution_format == "boxed"
    assert boxed == len(problems)


SMALL_PROFILE = [
    "model.tiny.vocab_size=400", "model.tiny.hidden_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=1",
    "model.tiny.num_kv_heads=1", "model.tiny.intermediate_size=128", "model.tiny.max_position_embeddings=256",
    "model.tiny.block_size=256", "model.tiny.max_steps=6", "model.tiny.warmup_steps=1", "model.tiny.threads=1",
    "data.synthetic.n_pretrain=60", "data.synthetic.n_sft=8", "data.synthetic.n_pool=8", "data.synthetic.n_test=8",
    "data.validation.n=2",
]


def test_build_tiny_base_trains_what_the_base_stage_trains(tmp_path, load_script):
    """scripts/build_tiny_base.py repeats the base stage's steps with snapshots on the side: its final weights
    equal the base stage's on the same pretrain.txt, bit for bit; a snapshot is an earlier, loadable model; the
    provenance names every file's hash, the corpus key and the step."""
    from safetensors.torch import load_file

    from tasks.base import run_base

    script = load_script("build_tiny_base")
    profile = str(ROOT / "conf" / "tiny.yaml")
    over = [a for o in SMALL_PROFILE for a in ("-o", o)]
    out = tmp_path / "snap"
    assert script.main(["-c", profile, *over, "--snapshots", "3", "--out", str(out)]) == 0
    cfg = load_config(profile, SMALL_PROFILE)
    stage = tmp_path / "stage"
    stage.mkdir()
    run_base(cfg, out / "data", stage)
    a, b = load_file(out / "final" / "model.safetensors"), load_file(stage / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    early = load_file(out / "step-3" / "model.safetensors")
    assert any(not early[k].equal(a[k]) for k in a)
    final = json.loads((out / "final" / "provenance.json").read_text())
    assert final["recipe"]["loss_on"] == "assistant" and math.isfinite(final["loss_last_100"])
    prov = json.loads((out / "step-3" / "provenance.json").read_text())
    assert prov["step"] == 3 and prov["recipe"]["max_steps"] == 6
    assert prov["corpus_key"] == config_hash(pretrain_corpus(cfg))
    assert prov["files"] == {n: d["sha256"] for n, d in describe_files(out / "step-3").items()
                             if n != "provenance.json"}
    with pytest.raises(SystemExit):  # a snapshot past the end is refused before any training
        script.main(["-c", profile, *over, "--snapshots", "6", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):  # a profile that loads its base has no recipe to run unless asked
        script.main(["-c", str(PROFILE), "--out", str(tmp_path / "bad")])
