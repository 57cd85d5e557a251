"""The flows on a throw-away Prefect API with fake stages: caching, failure/resume, MLflow, CLI."""

from __future__ import annotations

import logging
import socket

import pytest
from conftest import PROFILE
from typer.testing import CliRunner

from conf import load_config
from flows.cli import app
from flows.pipeline import hnsdpo, reevaluate
from flows.stages import stage_flows
from tasks.orchestration import tracking

pytestmark = pytest.mark.usefixtures("prefect_api")
ALL = ["data", "base", "sft", "sample", "verify", "pairs/weighted", "dpo/weighted", "pairs/random",
       "dpo/random", "evaluate/base", "evaluate/sft", "evaluate/dpo", "evaluate/dpo", "report"]


def _client(root):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _stage_runs(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


@pytest.mark.slow  # four full flow runs (~60 s on 2 busy cores)
def test_full_flow_caches_reruns_and_tracks(fake_stages, root, base_overrides, caplog):
    caplog.set_level(logging.INFO)
    first = hnsdpo(str(PROFILE), base_overrides)
    assert fake_stages.calls(root) == ALL
    assert first["report"].endswith("report.md") and "| dpo-weighted | 0.40 |" in open(first["report"]).read()
    assert not any(s["cached"] for s in first["stages"].values())

    # MLflow: every stage has a nested run with its metrics and artifacts; full models are not logged
    client = _client(root)
    parent = client.get_run(first["mlflow_run_id"])
    assert parent.data.params["dpo.beta"] == str(load_config(PROFILE).dpo.beta) and parent.data.tags["profile"] == str(PROFILE)
    assert parent.data.tags["git_commit"] and parent.info.status == "FINISHED"
    runs = _stage_runs(client, first["mlflow_run_id"])
    assert set(runs) == set(first["stages"])
    for name, run in runs.items():
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "stage")}
        assert "stage/manifest.json" in arts, name
        assert run.data.tags["cached"] == "false" and run.info.status == "FINISHED"
        assert run.data.metrics, name
    assert runs["verify"].data.metrics == {"correct_rate": 0.0, "status.ok": 1.0}
    assert "stage/model" not in {a.path for a in client.list_artifacts(runs["base"].info.run_id, "stage")}
    adapter = client.list_artifacts(runs["dpo/weighted"].info.run_id, "stage/adapter")
    assert [a.path for a in adapter] == ["stage/adapter/adapter_model.safetensors"]
    # step metrics from the training callback
    history = client.get_metric_history(runs["sft"].info.run_id, "loss")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.333)]
    # the primary strategy's adapter is a registered model version
    (mv,) = client.search_model_versions("name='hnsdpo-dpo'")
    assert mv.tags["strategy"] == "weighted" and mv.tags["key"] == first["stages"]["dpo/weighted"]["key"]

    # unchanged profile: nothing executes, every stage still has a (cached) nested run
    caplog.clear()
    second = hnsdpo(str(PROFILE), base_overrides)
    assert fake_stages.calls(root) == ALL
    assert all(s["cached"] for s in second["stages"].values())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ")]
    assert len(lines) == len(ALL) and all(": cached (" in ln and " → " in ln for ln in lines)
    runs2 = _stage_runs(client, second["mlflow_run_id"])
    assert set(runs2) == set(first["stages"]) and all(r.data.tags["cached"] == "true" for r in runs2.values())
    assert len(client.search_model_versions("name='hnsdpo-dpo'")) == 1  # same key: not registered twice

    # a third run hits Prefect's own cache (results persisted under the artifacts root)
    hnsdpo(str(PROFILE), base_overrides)
    assert fake_stages.calls(root) == ALL
    assert any((root / ".prefect" / "results").iterdir())

    # dpo.beta changes: only dpo and what follows it run again
    hnsdpo(str(PROFILE), [*base_overrides, "dpo.beta=0.2"])
    assert fake_stages.calls(root)[len(ALL):] == ["dpo/weighted", "dpo/random", "evaluate/dpo",
                                                  "evaluate/dpo", "report"]


@pytest.mark.slow
def test_failed_stage_then_rerun_resumes_there(fake_stages, root, base_overrides):
    root.mkdir(parents=True)
    (root / "fail-pairs").touch()
    with pytest.raises(RuntimeError, match="injected failure in pairs/weighted"):
        hnsdpo(str(PROFILE), base_overrides)
    assert fake_stages.calls(root) == ["data", "base", "sft", "sample", "verify", "pairs/weighted"]
    assert not (root / "pairs").exists() or not any((root / "pairs").iterdir())
    client = _client(root)
    exp = client.get_experiment_by_name("hnsdpo-tiny")
    failed = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")
    assert {r.info.run_name for r in failed} >= {"pairs/weighted"}

    (root / "fail-pairs").unlink()
    hnsdpo(str(PROFILE), base_overrides)
    assert fake_stages.calls(root)[6:] == ALL[5:]


def test_until_and_single_stage_flows(fake_stages, root, base_overrides):
    out = hnsdpo(str(PROFILE), base_overrides, until="sample")
    assert list(out["stages"]) == ["data", "base", "sft", "sample"] and out["report"] is None
    with pytest.raises(RuntimeError, match="needs verify"):
        stage_flows["pairs"](str(PROFILE), base_overrides, "random")
    stage_flows["verify"](str(PROFILE), base_overrides)
    res = stage_flows["pairs"](str(PROFILE), base_overrides, "random")
    assert list(res["stages"]) == ["pairs/random"]
    assert fake_stages.calls(root) == ["data", "base", "sft", "sample", "verify", "pairs/random"]


def test_reevaluate_latest_registered_model(fake_stages, root, base_overrides):
    hnsdpo(str(PROFILE), [*base_overrides, "orchestration.strategies=[random]", "evaluate.models=[dpo]"])
    n = len(fake_stages.calls(root))
    out = reevaluate(str(PROFILE), [*base_overrides, "evaluate.limit=1"])
    (name,) = [k for k in out["stages"] if k.startswith("evaluate/")]
    assert name == "evaluate/registered-v1" and not out["stages"][name]["cached"]
    assert fake_stages.calls(root)[n:] == ["evaluate/dpo"]


def test_unreachable_tracking_server_fails_before_any_stage(fake_stages, root, base_overrides):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(tracking.TrackingUnavailable, match="unreachable"):
        hnsdpo(str(PROFILE), [*base_overrides, f"tracking.uri=http://127.0.0.1:{port}"])
    assert fake_stages.calls(root) == []


def test_cli_run_config_and_errors(fake_stages, root, base_overrides):
    runner = CliRunner()
    args = [x for o in base_overrides for x in ("-o", o)]
    res = runner.invoke(app, ["config", "-c", str(PROFILE), *args, "-o", "dpo.beta=0.3"])
    assert res.exit_code == 0 and "beta: 0.3" in res.output
    bad = runner.invoke(app, ["config", "-c", str(PROFILE), "-o", "dpo.betta=1"])
    assert bad.exit_code == 2 and "dpo.betta: unknown key" in bad.output and "Traceback" not in bad.output
    assert runner.invoke(app, ["run", "-c", str(PROFILE), "--until", "nope"]).exit_code == 2
    res = runner.invoke(app, ["run", "-c", str(PROFILE), *args, "-o", "tracking.enabled=false"])
    assert res.exit_code == 0, res.output
    assert "| sft | 0.30 |" in res.output and f"artifacts: {root}" in res.output
    assert "tracking disabled" in res.output
    res = runner.invoke(app, ["run", "-c", str(PROFILE), *args])
    assert res.exit_code == 0 and "mlflow run: " in res.output and "mlflow ui --backend-store-uri" in res.output
