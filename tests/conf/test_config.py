"""Profiles load, overrides apply, and every kind of bad input names the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from conf import ConfigError, config_hash, load_config
from conf.schema import STAGES, Config

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "conf").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_profile_validates(profile: Path) -> None:
    cfg = load_config(profile)
    assert isinstance(cfg, Config)
    assert cfg.name == profile.stem


def test_paper_profile_keeps_the_papers_stated_values() -> None:
    cfg = load_config(ROOT / "conf/paper.yaml")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.model.quantization == "4bit"
    assert cfg.pairs.lam == 0.3
    assert [d.hub_id for d in cfg.data.sft] == ["meta-math/MetaMathQA"]
    assert {d.format for d in cfg.data.pool} == {"gsm8k", "math"}
    assert {d.name for d in cfg.data.eval} >= {"gsm8k_test", "math500"}


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config(ROOT / "conf/tiny.yaml",
                      ["dpo.beta=0.25", "sample.k=3", "orchestration.strategies=[random, uniform]",
                       "dpo.rpo_alpha=null", "sample.engine=hf"])
    assert cfg.dpo.beta == 0.25
    assert cfg.sample.k == 3
    assert cfg.orchestration.strategies == ["random", "uniform"]
    assert cfg.dpo.rpo_alpha is None
    assert cfg.sample.engine == "hf"


@pytest.mark.parametrize("profile", ["tiny.yaml", "ablation-tiny.yaml"])
def test_cpu_profiles_run_where_make_setup_builds_no_vllm(profile) -> None:
    """`make demo` and `make ablation` run on any CPU: `make setup` skips .venv-vllm without AVX-512, so the CPU
    profiles let the stages pick their engine (sampling: auto; evaluation: HF) instead of naming vLLM."""
    cfg = load_config(ROOT / "conf" / profile)
    assert cfg.sample.engine == "auto"
    assert cfg.evaluate.engine != "vllm"


def test_config_is_frozen() -> None:
    cfg = load_config(ROOT / "conf/tiny.yaml")
    with pytest.raises(ValidationError, match="frozen"):
        cfg.dpo.beta = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["dpo.betta=0.1"], "dpo.betta: unknown key"),
        (["dpo.beta=abc"], "dpo.beta"),
        (["dpo.beta=-1"], "dpo.beta"),
        (["sample.engine=tgi"], "sample.engine"),
        (["nosuchsection.x=1"], "nosuchsection: unknown key"),
        (["sample.k=0"], "sample.k"),
        (["pairs.lam=1.5"], "pairs.lam"),
        (["model.name_or_path=./no/such/model", "model.build_from_scratch=false"], "does not exist"),
        (["evaluate.datasets=[nope]"], "nope"),
    ],
)
def test_bad_override_names_key_and_file(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "conf/tiny.yaml", overrides)
    msg = str(err.value)
    assert needle in msg
    assert "tiny.yaml" in msg


@pytest.mark.parametrize("bad", ["dpo.beta", "=3", "dpo..beta=1"])
def test_malformed_override_syntax(bad: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        load_config(ROOT / "conf/tiny.yaml", [bad])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_and_unknown_key_in_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(broken)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: {build_from_scratch: true}\nsft: {learning_rat: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(typo)
    assert "sft.learning_rat: unknown key" in str(err.value)
    assert "typo.yaml" in str(err.value)


def test_wrong_type_in_file(tmp_path: Path) -> None:
    p = tmp_path / "types.yaml"
    p.write_text("model: {build_from_scratch: true}\nsample: {k: many}\n")
    with pytest.raises(ConfigError, match=r"sample\.k"):
        load_config(p)


def test_model_source_required(tmp_path: Path) -> None:
    p = tmp_path / "nomodel.yaml"
    p.write_text("name: x\nmodel: {build_from_scratch: false}\n")
    with pytest.raises(ConfigError, match="name_or_path"):
        load_config(p)


def test_env_vars_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HNSDPO_TEST_DATA", str(tmp_path))
    p = tmp_path / "env.yaml"
    p.write_text("model: {build_from_scratch: true}\n"
                 "data: {eval: [{name: g, format: gsm8k, path: '${HNSDPO_TEST_DATA}/g.jsonl'}]}\n")
    cfg = load_config(p)
    assert cfg.data.eval[0].path == f"{tmp_path}/g.jsonl"


def test_hash_is_stable_and_sensitive() -> None:
    a = load_config(ROOT / "conf/tiny.yaml")
    b = load_config(ROOT / "conf/tiny.yaml")
    c = load_config(ROOT / "conf/tiny.yaml", ["dpo.beta=0.3"])
    assert config_hash(a.dpo) == config_hash(b.dpo)
    assert config_hash(a.dpo) != config_hash(c.dpo)
    assert config_hash(a.sample) == config_hash(c.sample)


def test_stage_names() -> None:
    assert STAGES[0] == "data" and "dpo" in STAGES


def test_extends_deep_merges_and_detects_cycles(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "conf/tiny.yaml").read_text())
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("extends: ../base.yaml\nname: child\ndpo: {beta: 0.3}\norchestration: {strategies: [uniform]}\n")
    cfg = load_config(child, ["dpo.max_steps=7"])
    tiny = load_config(ROOT / "conf/tiny.yaml")
    assert cfg.name == "child" and cfg.dpo.beta == 0.3 and cfg.dpo.max_steps == 7
    assert cfg.dpo.learning_rate == tiny.dpo.learning_rate  # merged, not replaced
    assert cfg.model.tiny == tiny.model.tiny
    assert cfg.orchestration.strategies == ["uniform"]  # lists replace
    base.write_text("extends: sub/child.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(child)
    child.write_text("extends: ../missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml.*extended by"):
        load_config(child)
