"""The ablation flow: its plan shares the pipeline's upstream keys; end to end on a reduced profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conf import load_config
from tasks.orchestration.ablation import ablation_nodes
from tasks.orchestration.runner import node_key, pipeline, plan_keys

PROFILE = Path(__file__).resolve().parents[2] / "conf" / "ablation-tiny.yaml"


def _keys(cfg) -> dict[str, str]:
    keys: dict[str, str] = {}
    for node_cfg, node in ablation_nodes(cfg):
        keys[node.name] = node_key(node_cfg, node, {r: keys[n] for r, n in node.inputs})
    return keys


def test_profile_plan_shares_the_chain_and_separates_arms_and_seeds():
    cfg = load_config(PROFILE, [])
    assert [a.name for a in cfg.ablation.arms] == ["random", "uniform", "weighted-0.3", "weighted-0.3-original"]
    assert cfg.ablation.seeds == [0, 1, 2] and cfg.data.synthetic.n_test >= 500
    keys = _keys(cfg)
    assert len(keys) == 6 + 4 * (1 + 2 * 3)  # shared chain + evaluate/sft, then pairs + (dpo, evaluate) × seeds
    ref = plan_keys(cfg, pipeline(cfg))
    for name in ("data", "base", "sft", "sample", "verify", "evaluate/sft"):
        assert keys[name] == ref[name], name  # the same artifacts as the main pipeline: reused through the cache
    assert keys["pairs/weighted-0.3"] == ref["pairs/weighted"]  # λ = 0.3 is the profile's pairs.lam
    pairs = {keys[f"pairs/{a.name}"] for a in cfg.ablation.arms}
    dpo = {keys[f"dpo/{a.name}/s{s}"] for a in cfg.ablation.arms for s in cfg.ablation.seeds}
    assert len(pairs) == 4 and len(dpo) == 12
    nodes = dict((n.name, (c, n)) for c, n in ablation_nodes(cfg))
    c, n = nodes["dpo/weighted-0.3-original/s2"]
    assert (c.pairs.strategy, c.pairs.lam, c.pairs.weights.formula, c.dpo.seed, n.inputs) == (
        "weighted", 0.3, "original", 2, (("sft", "sft"), ("pairs", "pairs/weighted-0.3-original")))
    assert nodes["pairs/uniform"][0].pairs.lam == cfg.pairs.lam  # uniform keeps the profile's λ (unused)


def test_soundness_profile_adds_one_arm_and_reuses_every_other_stage():
    base = _keys(load_config(PROFILE, []))
    cfg = load_config(PROFILE.with_name("ablation-tiny-soundness.yaml"), [])
    keys = _keys(cfg)
    assert set(keys) - set(base) == {"pairs/weighted-0.3-answer-only"} | {
        f"{stage}/weighted-0.3-answer-only/s{s}" for stage in ("dpo", "evaluate") for s in cfg.ablation.seeds}
    assert all(keys[name] == key for name, key in base.items())  # everything else from the cache
    nodes = dict((n.name, (c, n)) for c, n in ablation_nodes(cfg))
    c, _ = nodes["pairs/weighted-0.3-answer-only"]
    assert (c.pairs.soundness, nodes["pairs/weighted-0.3"][0].pairs.soundness) == ("answer_only", "first_error")


REDUCED = [
    "orchestration.retry_delay_s=0",
    "data.synthetic={seed: 1234, n_pretrain: 200, n_sft: 40, n_pool: 4, n_test: 8, min_steps: 2, max_steps: 3}",
    "data.validation.n=0",
    "model.tiny={vocab_size: 400, hidden_size: 64, num_layers: 1, num_heads: 1, num_kv_heads: 1, head_dim: 64, "
    "intermediate_size: 128, max_position_embeddings: 512, block_size: 128, batch_size: 4, max_steps: 4, "
    "warmup_steps: 1}",
    "sft.max_steps=2", "sft.batch_size=4", "sft.save_steps=2", "sft.max_seq_len=256",
    "sample.engine=hf", "sample.k=3", "sample.max_tokens=24", "sample.shard_size=4",
    "verify.time_budget_s=30", "verify.max_error_share=1.0", "pairs.negatives=[incorrect, unsound, degenerate]",
    "dpo.max_steps=1", "dpo.batch_size=2", "dpo.save_steps=1", "dpo.max_length=256", "dpo.max_prompt_length=128",
    "evaluate.engine=hf", "evaluate.max_tokens=24", "evaluate.bootstrap_samples=50",
    "ablation.arms=[{name: random, strategy: random}, {name: weighted-0.3, strategy: weighted, lam: 0.3}]",
    "ablation.seeds=[0]",
]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_ablation_flow_end_to_end(tmp_path):
    from mlflow import MlflowClient

    from flows.ablation import ablation_flow
    from tasks.analysis.ablation_render import publish

    root = tmp_path / "artifacts"
    overrides = [f"orchestration.artifacts_root={root}", *REDUCED]
    out = ablation_flow(str(PROFILE), overrides, command="python -m flows.ablation -c reduced")
    assert set(out["stages"]) == {"data", "base", "sft", "sample", "verify", "evaluate/sft", "pairs/random",
                                  "dpo/random/s0", "evaluate/random/s0", "pairs/weighted-0.3",
                                  "dpo/weighted-0.3/s0", "evaluate/weighted-0.3/s0"}
    report_dir = Path(out["report_dir"])
    assert report_dir.parent == root / "ablation"
    report = json.loads((report_dir / "ablation.json").read_text())
    assert [r["arm"] for r in report["arms"]] == ["sft", "random", "weighted-0.3"]
    assert report["n_problems"] == 8 and report["dataset"] == "synthetic_test"
    assert {(c["arm"], c["vs"]) for c in report["comparisons"]} == {
        ("random", "sft"), ("weighted-0.3", "sft"), ("weighted-0.3", "random")}
    assert sum(r["n"] for r in report["by_steps"]) == 8
    assert [w["arm"] for w in report["weights"]] == ["random", "weighted-0.3"]
    assert report["weights"][0]["constant"] is True  # random pairs: w = 1
    md = (report_dir / "ablation.md").read_text()
    assert "## Paired differences" in md and "python -m flows.ablation -c reduced" in md
    assert (report_dir / "ablation.png").stat().st_size > 10_000

    # logged to MLflow: a nested run for the report with its files, the summary metrics on the parent
    client = MlflowClient(tracking_uri=out["tracking_uri"])
    exp = client.get_run(out["mlflow_run_id"]).info.experiment_id
    runs = {r.info.run_name: r for r in client.search_runs(
        [exp], f"tags.mlflow.parentRunId = '{out['mlflow_run_id']}'")}
    arts = {a.path for a in client.list_artifacts(runs["ablation"].info.run_id, "stage")}
    assert {"stage/ablation.md", "stage/ablation.png", "stage/ablation.json"} <= arts
    assert "weighted-0.3-random/diff" in client.get_run(out["mlflow_run_id"]).data.metrics

    # a second run executes nothing; the docs copy carries the command and the plot
    again = ablation_flow(str(PROFILE), overrides)
    assert all(s["cached"] for s in again["stages"].values()) and again["report_dir"] == out["report_dir"]
    dest = publish(again["report_dir"], tmp_path / "docs" / "tiny.md", "make ablation")
    assert "make ablation" in dest.read_text() and (tmp_path / "docs" / "tiny.png").is_file()
    assert "![ablation plot](tiny.png)" in dest.read_text()
    # a hand-written analysis beside it survives regeneration, after the computed reading
    (tmp_path / "docs" / "tiny.notes.md").write_text("## Analysis\n\nWritten by hand.\n")
    text = publish(again["report_dir"], dest, "make ablation").read_text()
    assert text.index("## Reading") < text.index("Written by hand.") < text.index("## Accuracy per arm")
