"""The pipeline plan, stage keys and tracking helpers: pure functions, no Prefect server."""

from __future__ import annotations

import socket

import pytest
from conftest import PROFILE

from conf import load_config
from tasks.common.artifacts import Manifest
from tasks.orchestration import plan as dag
from tasks.orchestration import runner, stages, tracking


def cfg_with(*overrides):
    return load_config(PROFILE, list(overrides))


def test_pipeline_shape_branches_and_baselines():
    cfg = cfg_with("orchestration.strategies=[weighted, random, uniform]")
    names = [n.name for n in dag.pipeline(cfg)]
    assert names[:5] == ["data", "base", "sft", "sample", "verify"]
    for s in ("weighted", "random", "uniform"):
        assert names.index(f"pairs/{s}") < names.index(f"dpo/{s}") < names.index(f"evaluate/dpo-{s}")
    assert {"evaluate/base", "evaluate/sft"} <= set(names)
    assert names[-1] == "report"
    report = dag.pipeline(cfg)[-1]
    assert dict(report.inputs) == {"base": "evaluate/base", "sft": "evaluate/sft",
                                   "dpo-weighted": "evaluate/dpo-weighted", "dpo-random": "evaluate/dpo-random",
                                   "dpo-uniform": "evaluate/dpo-uniform"}
    # every node's upstream is planned before it
    seen: set[str] = set()
    for node in dag.pipeline(cfg):
        assert set(node.upstream) <= seen, node.name
        seen.add(node.name)


def test_until_and_evaluate_models():
    cfg = cfg_with("evaluate.models=[dpo]")
    assert [n.name for n in dag.pipeline(cfg, until="sft")] == ["data", "base", "sft"]
    names = [n.name for n in dag.pipeline(cfg)]
    assert "evaluate/base" not in names and "evaluate/dpo-weighted" in names
    with pytest.raises(ValueError, match="unknown stage 'dpoo'"):
        dag.pipeline(cfg, until="dpoo")


def test_keys_change_only_downstream_of_the_changed_section(fake_stages):
    nodes_a = dag.pipeline(cfg_with())
    a = dag.plan_keys(cfg_with(), nodes_a)
    b = dag.plan_keys(cfg_with("dpo.beta=0.3"), nodes_a)
    changed = {n for n in a if a[n] != b[n]}
    assert changed == {"dpo/weighted", "dpo/random", "evaluate/dpo-weighted", "evaluate/dpo-random", "report"}
    c = dag.plan_keys(cfg_with("pairs.lam=0.5"), nodes_a)
    assert {n for n in a if a[n] != c[n]} == {"pairs/weighted", "pairs/random", "dpo/weighted", "dpo/random",
                                              "evaluate/dpo-weighted", "evaluate/dpo-random", "report"}
    # the strategy is part of the pairs key: branches never share an artifact
    assert a["pairs/weighted"] != a["pairs/random"]
    # which models are evaluated is flow-level, not part of an evaluation's key
    d = dag.plan_keys(cfg_with("evaluate.models=[base, sft, dpo]"), nodes_a)
    assert d["evaluate/base"] == a["evaluate/base"]


def test_version_bump_changes_key_and_default_version(fake_stages, monkeypatch):
    cfg = cfg_with()
    nodes = dag.pipeline(cfg)
    a = dag.plan_keys(cfg, nodes)
    monkeypatch.setattr(fake_stages, "VERSION", "2")
    assert dag.plan_keys(cfg, nodes)["verify"] != a["verify"]
    monkeypatch.delattr(fake_stages, "VERSION")
    assert stages.stage_version("verify") == "1"


def test_base_key_follows_the_pretraining_corpus_not_the_whole_data_stage(fake_stages, tmp_path):
    """A from-scratch base is keyed by what pretrain.txt is a function of: the synthetic settings with the
    corpus seed, the solution format and the data stage's version. Data settings that do not touch the
    corpus (data.seed picks a limit's subset) and, with data.synthetic.pretrain_seed pinned, the data seed
    itself leave it, so data seeds that share a pinned corpus share one base; a hub base ignores data."""
    scratch = cfg_with()
    nodes = dag.pipeline(scratch)

    def base(*overrides):
        return dag.plan_keys(cfg_with(*overrides), nodes)["base"]

    k = base()
    assert base("data.seed=5") == k
    for moves in ("data.synthetic.seed=5", "data.synthetic.n_pretrain=999", "data.synthetic.n_test=77",
                  "data.solution_format=source", "data.synthetic.pretrain_seed=5", "model.tiny.max_steps=7"):
        assert base(moves) != k, moves
    pinned = base("data.synthetic.pretrain_seed=5")
    assert base("data.synthetic.pretrain_seed=5", "data.synthetic.seed=6") == pinned
    assert base("data.synthetic.seed=5") == pinned  # the same corpus whether pinned or not
    assert dag.plan_keys(cfg_with("data.synthetic.seed=6"), nodes)["data"] != dag.plan_keys(scratch, nodes)["data"]
    model = tmp_path / "m"
    model.mkdir()
    hub = [f"model.name_or_path={model}", "model.build_from_scratch=false"]
    hub_nodes = dag.pipeline(cfg_with(*hub))
    assert (dag.plan_keys(cfg_with(*hub), hub_nodes)["base"]
            == dag.plan_keys(cfg_with(*hub, "data.seed=5", "data.synthetic.seed=5"), hub_nodes)["base"])


def test_a_local_base_is_keyed_by_its_files_not_only_its_path(tmp_path):
    """New weights at the same path (a re-shipped testbed base) make a new base key, and so a new SFT, sample,
    ... chain; the same bytes at the same path keep the key; a renamed file moves it. Hidden folders (a
    .git or .cache beside the weights) and a Markdown model card do not count."""
    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    over = [f"model.name_or_path={model}", "model.build_from_scratch=false"]
    nodes = dag.pipeline(cfg_with(*over))

    def keys():
        return dag.plan_keys(cfg_with(*over), nodes)

    first = keys()
    assert keys() == first
    (model / ".cache").mkdir()
    (model / ".cache" / "lock").write_text("x")
    (model / "README.md").write_text("# a model card")
    assert keys() == first
    assert dag.plan_keys(cfg_with(*over, "model.tiny.max_steps=7"), nodes) == first  # the recipe is not used
    (model / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 63)
    second = keys()
    assert second["base"] != first["base"] and second["sft"] != first["sft"]
    assert second["data"] == first["data"]
    (model / "model.safetensors").rename(model / "weights.safetensors")
    assert keys()["base"] not in (first["base"], second["base"])


def test_folder_fingerprint_samples_large_files(tmp_path, monkeypatch):
    """Files above the full-hash limit are fingerprinted by size and sampled megabytes: a change in a sampled
    region or in the size moves the fingerprint."""
    from tasks.common import artifacts

    monkeypatch.setattr(artifacts, "FULL_HASH_LIMIT", 1 << 20)
    big = tmp_path / "m" / "shard.bin"
    big.parent.mkdir()
    big.write_bytes(b"a" * (4 << 20))
    a = artifacts.folder_fingerprint(big.parent)
    big.write_bytes(b"b" + b"a" * ((4 << 20) - 1))
    b = artifacts.folder_fingerprint(big.parent)
    big.write_bytes(b"b" + b"a" * (4 << 20))
    c = artifacts.folder_fingerprint(big.parent)
    assert len({a, b, c}) == 3


def test_a_pinned_corpus_builds_the_base_once_across_data_seeds(fake_stages, root, base_overrides):
    """Two data seeds on one pinned pretraining corpus: the second run builds its own data and SFT, and takes
    the base from the cache."""
    built: dict[str, Manifest] = {}
    for seed in (11, 12):
        cfg = cfg_with(*base_overrides, "data.synthetic.pretrain_seed=3", f"data.synthetic.seed={seed}")
        done: dict[str, Manifest] = {}
        for node in dag.pipeline(cfg, until="sft"):
            done[node.name] = runner.execute_stage(cfg, node, {r: done[n] for r, n in node.inputs})
        built[str(seed)] = done
    assert [built["12"][n].cached for n in ("data", "base", "sft")] == [False, True, False]
    assert built["12"]["base"].path == built["11"]["base"].path
    assert built["12"]["data"].path != built["11"]["data"].path


def test_execute_stage_keys_match_plan_and_reuse(fake_stages, root, base_overrides):
    cfg = cfg_with(*base_overrides)
    nodes = dag.pipeline(cfg)
    keys = dag.plan_keys(cfg, nodes)
    done: dict[str, Manifest] = {}
    for node in nodes:
        done[node.name] = runner.execute_stage(cfg, node, {r: done[n] for r, n in node.inputs})
        assert done[node.name].key == keys[node.name], node.name
        assert not done[node.name].cached
    assert len(fake_stages.calls(root)) == len(nodes)
    again = runner.execute_stage(cfg, nodes[-1], runner.complete_upstream(cfg, nodes[-1]))
    assert again.cached and len(fake_stages.calls(root)) == len(nodes)
    assert "| dpo-random | 0.40 |" in again.file("report.md").read_text()


def test_failed_stage_leaves_no_complete_artifact(fake_stages, root, base_overrides):
    cfg = cfg_with(*base_overrides)
    data = runner.execute_stage(cfg, dag.pipeline(cfg)[0], {})
    (root / "fail-verify").touch()
    nodes = {n.name: n for n in dag.pipeline(cfg)}
    base = runner.execute_stage(cfg, nodes["base"], {"data": data})
    sft = runner.execute_stage(cfg, nodes["sft"], {"base": base, "data": data})
    sample = runner.execute_stage(cfg, nodes["sample"], {"model": sft, "data": data})
    with pytest.raises(RuntimeError, match="injected failure in verify"):
        runner.execute_stage(cfg, nodes["verify"], {"sample": sample, "data": data})
    assert not any((root / "verify").iterdir())  # no tmp folder left, nothing that looks complete


def test_complete_upstream_names_the_missing_stage(fake_stages, root, base_overrides):
    cfg = cfg_with(*base_overrides)
    dpo = next(n for n in dag.pipeline(cfg) if n.name == "dpo/random")
    with pytest.raises(RuntimeError, match=r"needs sft \(\w+\).*hnsdpo run --until sft"):
        runner.complete_upstream(cfg, dpo)


def test_stage_nodes_for_one_strategy():
    cfg = cfg_with("orchestration.strategies=[weighted, random]")
    assert [n.name for n in dag.stage_nodes(cfg, "evaluate", "random")] == [
        "evaluate/base", "evaluate/sft", "evaluate/dpo-random"]
    assert [n.name for n in dag.stage_nodes(cfg, "pairs")] == ["pairs/weighted", "pairs/random"]
    with pytest.raises(ValueError, match="nothing to run"):
        dag.stage_nodes(cfg, "dpo", "uniform")


def test_tracking_helpers(tmp_path):
    cfg = cfg_with(f"orchestration.artifacts_root={tmp_path / 'a'}")
    assert tracking.tracking_uri(cfg) == f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    assert tracking.artifact_location(cfg) == (tmp_path / "a" / "mlruns").as_uri()
    params = tracking.config_params(cfg)
    assert params["dpo.beta"] == str(load_config(PROFILE).dpo.beta) and params["orchestration.strategies"] == '["weighted", "random"]'
    assert tracking.numeric_metrics({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": float("nan"), "f g(h)": True}) == {
        "a": 1.0, "b.c": 2.5, "f g_h_": 1.0}
    m = Manifest(stage="sft", key="k", path=tmp_path, files={
        "adapter/adapter_model.safetensors": {"bytes": 50 << 20}, "merged/model.safetensors": {"bytes": 10},
        "model.json": {"bytes": 10}, "checkpoints/checkpoint-5/x.bin": {"bytes": 1}, "big.jsonl": {"bytes": 9 << 20}})
    assert tracking.files_to_log(m, cached=False) == ["manifest.json", "adapter/adapter_model.safetensors",
                                                      "model.json"]
    assert tracking.files_to_log(m, cached=True) == ["manifest.json", "model.json"]


def test_unreachable_tracking_server_fails_with_clear_message():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(tracking.TrackingUnavailable, match=f"127.0.0.1:{port} is unreachable"):
        tracking.check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
