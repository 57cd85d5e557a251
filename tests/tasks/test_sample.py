"""tasks.generation.sampling: shards, records, metrics, and resuming after a crash (HF engine on the tiny model)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import tasks.generation.sampling as sample_mod
from conf.schema import Config, ModelConfig, SampleConfig
from tasks.common.artifacts import build_stage
from tasks.common.records import Problem, Sample, iter_jsonl, write_jsonl
from tasks.data import VERSION
from tasks.generation.engine import Generation
from tasks.generation.sampling import read_pool, shard_name, shards, summarise, to_samples
from tasks.sample import run_sample
from training.modelref import write_model_ref
from training.prompts import user_turn

QUESTIONS = ["Natalia sold 48 clips in April and half as many in May. How many in total?",
             "Weng earns $12 an hour. How much for 50 minutes?", "What is 7 + 5?", "What is 3 * 4?",
             "Tom has 5 apples and eats 2. How many are left?"]


@pytest.fixture(scope="module")
def dirs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    model_dir, data_dir = root / "sft", root / "data"
    model_dir.mkdir()
    write_model_ref(model_dir, base=str(tiny_model_dir))
    write_jsonl(data_dir / "pool.jsonl", [Problem(id=f"pool-{i}", question=q, answer="1", source="test", split="pool")
                                          for i, q in enumerate(QUESTIONS)])
    return model_dir, data_dir


def _cfg(**sample) -> Config:
    s = dict(engine="hf", k=2, temperature=1.0, max_tokens=5, shard_size=2, batch_size=4, seed=3) | sample
    return Config(model=ModelConfig(build_from_scratch=True), sample=SampleConfig(**s))


def _stage(cfg, dirs, root: Path):
    model_dir, data_dir = dirs
    return build_stage(root, "sample", VERSION, cfg.sample, {},
                       lambda out: run_sample(cfg, model_dir, data_dir, out), resume_dir=True)


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted((folder / "samples").glob("shard-*.jsonl")) for row in iter_jsonl(f)]


def test_shards_and_names():
    assert [len(s) for s in shards(list(range(5)), 2)] == [2, 2, 1]
    assert shard_name(3) == "shard-00003.jsonl"


def test_read_pool_limit_and_errors(tmp_path, dirs):
    assert [p.id for p in read_pool(dirs[1] / "pool.jsonl", limit=2)] == ["pool-0", "pool-1"]
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"id": "a", "question": "q", "answer": "1", "source": "s", "split": "p"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"pool.jsonl: line 2 is not a valid Problem"):
        read_pool(bad)
    with pytest.raises(FileNotFoundError, match="run the data stage"):
        read_pool(tmp_path / "missing.jsonl")


def test_to_samples_and_summary_count_nonfinite(tmp_path):
    probs = [Problem(id="a", question="q", answer="1", source="s", split="p")]
    gens = [[Generation.make("x", 2, float("nan"), "length"), Generation.make("y", 4, -2.0, "stop")]]
    rows = to_samples(probs, gens, k=2)
    assert [(r.problem_id, r.index) for r in rows] == [("a", 0), ("a", 1)]
    write_jsonl(tmp_path / "s.jsonl", rows)  # NaN becomes null, as the pairs stage expects
    st = sample_mod.shard_stats(tmp_path / "s.jsonl")
    m = summarise([st], problems=1, new_tokens=6, seconds=2.0, shards_resumed=0)
    assert (m["samples"], m["tokens"], m["tokens_per_s"], m["nonfinite_logprobs"]) == (2, 6, 3.0, 1)
    assert (m["finish_stop"], m["finish_length"], m["logprob_mean"]) == (1, 1, -0.5)
    with pytest.raises(RuntimeError, match="expected 3"):
        to_samples(probs, gens, k=3)


def test_run_sample_writes_shards_of_samples(dirs, tmp_path):
    m = _stage(_cfg(limit=4), dirs, tmp_path)
    files = sorted(p.name for p in (m.path / "samples").iterdir())
    assert files == ["shard-00000.jsonl", "shard-00001.jsonl"]
    rows = [Sample.model_validate(r) for r in _rows(m.path)]
    assert [(r.problem_id, r.index) for r in rows] == [(f"pool-{i}", j) for i in range(4) for j in range(2)]
    for r in rows:
        assert 1 <= r.n_tokens <= 5 and r.finish_reason in ("stop", "length")
        assert r.logprob_sum <= 0 and math.isclose(r.logprob_mean, r.logprob_sum / r.n_tokens, rel_tol=1e-9)
    assert (m.metrics["problems"], m.metrics["samples"], m.metrics["shards"]) == (4, 8, 2)
    assert m.metrics["tokens"] == sum(r.n_tokens for r in rows)
    assert m.metrics["finish_stop"] + m.metrics["finish_length"] == 8
    assert m.files["samples/shard-00000.jsonl"]["rows"] == 4


def test_resume_after_crash_generates_only_the_rest_and_matches(dirs, tmp_path, monkeypatch):
    cfg = _cfg()
    reference = _rows(_stage(cfg, dirs, tmp_path / "uninterrupted").path)
    real = sample_mod.generate
    calls: list[int] = []

    def crash_on_second(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sample_mod, "generate", crash_on_second)
    root = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        _stage(cfg, dirs, root)
    work = next((root / "sample").glob(".tmp-*"))
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["shard-00000.jsonl"]

    calls.clear()
    monkeypatch.setattr(sample_mod, "generate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    m = _stage(cfg, dirs, root)
    assert calls == [2, 1]  # shards 1 and 2 only (5 problems, 2 per shard)
    assert m.metrics["shards_resumed"] == 1 and m.metrics["samples"] == 10
    assert _rows(m.path) == reference
    assert not list((root / "sample").glob(".tmp-*"))


def test_prompts_and_reference_logprobs_are_written(dirs, tmp_path, tiny_model_dir):
    model_dir, data_dir = dirs
    pool = read_pool(data_dir / "pool.jsonl")
    solved = [p.model_copy(update={"solution": f"{i} + 1 = {i + 1}."}) if i % 2 == 0 else p
              for i, p in enumerate(pool)]
    data2 = tmp_path / "data2"
    write_jsonl(data2 / "pool.jsonl", solved)
    cfg = _cfg(limit=4)
    m = build_stage(tmp_path, "sample", VERSION, cfg.sample, {},
                    lambda out: run_sample(cfg, model_dir, data2, out), resume_dir=True)
    prompts = list(iter_jsonl(m.path / "prompts.jsonl"))
    assert prompts == [{"problem_id": p.id, "prompt": user_turn(p.question, cfg.sample.instruction)}
                       for p in solved[:4]]
    refs = list(iter_jsonl(m.path / "references.jsonl"))
    assert [r["problem_id"] for r in refs] == ["pool-0", "pool-2"] and m.metrics["references_scored"] == 2
    assert all(r["logprob_sum"] < 0 and r["n_tokens"] > 1 for r in refs)


def test_score_completions_gives_the_sampled_logprob_back(tiny_model_dir):
    """Teacher forcing a greedy output gives back the log-prob sampling recorded for it (cut at the limit: no
    EOS scored)."""
    from tasks.generation.engine import generate, score_completions
    from training.models import load_tokenizer
    from training.prompts import chat_prompt

    model = read_model_ref_for(tiny_model_dir)
    tok = load_tokenizer(tiny_model_dir)
    prompts = [chat_prompt(tok, q, "Box it.") for q in QUESTIONS]
    gens = [g[0] for g in generate(model, prompts, engine="hf", n=1, temperature=0.0, max_tokens=40, seed=0,
                                   batch_size=5)]
    checked = 0
    for prompt, g in zip(prompts, gens, strict=True):
        ids = tok(g.text, add_special_tokens=False)["input_ids"]
        stop = g.finish_reason == "stop"
        if len(ids) + stop != g.n_tokens:  # the text does not round-trip: skip
            continue
        (scored,) = score_completions(model, [prompt], [g.text], eos=stop)
        assert scored.n_tokens == g.n_tokens and scored.logprob_sum == pytest.approx(g.logprob_sum, abs=1e-3)
        checked += 1
    scored = score_completions(model, prompts, [g.text for g in gens], batch_size=2)  # right padding, batched
    assert len(scored) == 5 and all(s.logprob_sum < 0 for s in scored)
    assert checked >= 1


def read_model_ref_for(path):
    from training.modelref import ModelRef

    return ModelRef(base=str(path))


def test_different_seed_gives_different_samples(dirs, tmp_path):
    a = _rows(_stage(_cfg(limit=2, seed=1), dirs, tmp_path).path)
    b = _rows(_stage(_cfg(limit=2, seed=2), dirs, tmp_path).path)
    assert [r["text"] for r in a] != [r["text"] for r in b]


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python").exists(),
                    reason="no .venv-vllm (run `make setup`)")
def test_run_sample_with_vllm_engine(dirs, tmp_path):
    from conf.schema import VLLMConfig

    cfg = _cfg(engine="vllm", limit=3, shard_size=3, k=3, vllm=VLLMConfig(dtype="float32", enforce_eager=True))
    m = _stage(cfg, dirs, tmp_path)
    rows = [Sample.model_validate(r) for r in _rows(m.path)]
    assert [(r.problem_id, r.index) for r in rows] == [(f"pool-{i}", j) for i in range(3) for j in range(3)]
    assert all(r.logprob_sum <= 0 and 1 <= r.n_tokens <= 5 for r in rows)
    assert len({r.text for r in rows[:3]}) > 1 and m.metrics["tokens_per_s"] > 0
