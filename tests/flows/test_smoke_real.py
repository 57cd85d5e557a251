"""conf/smoke-real.yaml end to end: the paper's stages and formats on real GSM8K/MATH rows on CPU
(tiny from-scratch model, 4-bit QLoRA, vLLM sampling, GSM8K test + MATH-500 evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conf import load_config

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "conf" / "smoke-real.yaml"
SHARED = ROOT.parent / "shared" / "data"


def test_profile_shape():
    cfg = load_config(PROFILE, [])
    assert cfg.model.build_from_scratch and cfg.model.quantization == "4bit"
    assert {s.format for s in cfg.data.pool} == {"gsm8k", "math"} and cfg.sample.engine == "vllm"
    assert sum(s.limit for s in cfg.data.pool) <= 48
    assert [e.name for e in cfg.data.eval] == ["gsm8k_test", "math500"]
    for s in [*cfg.data.sft, *cfg.data.pool, *cfg.data.eval]:
        assert s.path is None or s.path.startswith("../shared/data/")


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.usefixtures("prefect_api")
@pytest.mark.skipif(not (ROOT / ".venv-vllm" / "bin" / "python").exists(), reason="no .venv-vllm")
@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data")
def test_smoke_real_end_to_end(tmp_path, monkeypatch):
    from flows.pipeline import hnsdpo

    monkeypatch.chdir(ROOT)  # the profile's paths are relative to the project root
    out = hnsdpo(str(PROFILE), [f"orchestration.artifacts_root={tmp_path / 'artifacts'}"])
    stages = out["stages"]
    for name in ("data", "base", "sft", "sample", "verify", "pairs/weighted", "dpo/weighted", "report"):
        assert any(k == name or k.startswith(name) for k in stages), (name, sorted(stages))
    sample = json.loads((Path(stages["sample"]["path"]) / "manifest.json").read_text())["metrics"]
    assert sample["engine"] == "vllm" and sample["shards"] == 2 and sample["samples"] == 32 * 4
    sft = json.loads((Path(stages["sft"]["path"]) / "manifest.json").read_text())["metrics"]
    assert sft["quantization"] == "4bit"
