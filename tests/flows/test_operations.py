"""Operating the pipeline day to day (issue 17): progress, clean ends, errors said once, the CLI, MLflow.

Fast tests use the fake stages (``orch_fakes``); the kill tests run a flow in a subprocess (slow).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import HERE, PROFILE
from typer.testing import CliRunner

from conf import load_config
from flows.cli import app
from tasks.common.artifacts import DeterministicError, is_deterministic, retry_unless_deterministic
from tasks.common.progress import Progress, format_duration
from tasks.orchestration import plan as dag
from tasks.orchestration import runner, tracking

ROOT = HERE.parents[1]


def _client(root):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --- progress ------------------------------------------------------------------------------------------

def test_progress_lines_have_step_rate_eta_and_postfix():
    log = logging.getLogger("test-progress")
    p = Progress("sft", total=10, mode="lines", every_s=0, logger=log)
    p.start_at(2)  # resumed at step 2
    time.sleep(0.01)
    p.update(3, loss=1.23456)
    line = p.lines[-1]
    assert line.startswith("sft: step 5/10 (50%), ") and " step/s, ETA " in line and line.endswith("loss 1.235")
    p.update(5)
    p.close()
    assert p.lines[-1].startswith("sft: step 10/10 (100%)") and ", took " in p.lines[-1]
    assert format_duration(75) == "1m15s" and format_duration(3725) == "1h02m" and format_duration(float("nan")) == "?"
    quiet = Progress("x", total=3, mode="lines", every_s=3600, logger=log)
    quiet.update(1)
    quiet.update(1)
    assert quiet.lines == []  # only every every_s seconds …
    quiet.close()
    assert len(quiet.lines) == 1  # … and once at the end


def test_progress_bar_mode_writes_a_tqdm_bar(tmp_path):
    with (tmp_path / "bar.txt").open("w") as f:
        with Progress("dpo/weighted", total=4, mode="bar", stream=f) as p:
            for _ in range(4):
                p.update(1, loss=0.5)
    text = (tmp_path / "bar.txt").read_text()
    assert "dpo/weighted" in text and "4/4" in text and "loss=0.5" in text


def test_base_pretraining_progress_callback_reports_steps_and_resume():
    from tasks.base import pretrain_progress

    with pretrain_progress(100, mode="lines", every_s=0, logger=logging.getLogger("t")) as (cb, bar):
        cb(41, 2.0)  # a resumed run: its first step is the checkpoint's + 1
        cb(42, 1.0)
    assert bar.initial == 40 and bar.n == 42
    assert bar.lines[0].startswith("base pretraining: step 41/100 (41%)") and bar.lines[0].endswith("loss 2")
    assert "loss 1.5" in bar.lines[1]  # mean of the recent window


def test_tiny_pretrain_calls_progress_every_step():
    pytest.importorskip("torch")
    import torch

    from conf.schema import TinyModelConfig
    from training.tiny import pretrain

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, labels):
            return SimpleNamespace(loss=(self.w - 1.0).pow(2).sum())

    seen = []
    cfg = TinyModelConfig(max_steps=5, batch_size=1, warmup_steps=1)
    pretrain(M(), torch.zeros(3, 4, dtype=torch.long), cfg, progress=lambda s, loss: seen.append(s))
    assert seen == [1, 2, 3, 4, 5]


def test_trainer_progress_callback_follows_global_step():
    from training.sft import ProgressCallback

    cb = ProgressCallback("sft", mode="lines", every_s=0, logger=logging.getLogger("t"))
    state = SimpleNamespace(max_steps=6, global_step=2, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    progress = cb.progress
    for step in (3, 4):
        state.global_step = step
        cb.on_step_end(None, state, None)
    cb.on_log(None, state, None, logs={"loss": 0.75, "rewards/margins": 0.2})
    state.global_step = 6
    cb.on_step_end(None, state, None)
    cb.on_train_end(None, state, None)
    assert progress.initial == 2 and progress.n == 6
    assert progress.lines[1].startswith("sft: step 4/6") and progress.lines[-1].startswith("sft: step 6/6")
    assert "loss 0.75" in progress.lines[-1] and "margins 0.2" in progress.lines[-1]


def test_stage_started_line_only_when_building(fake_stages, root, base_overrides, caplog):
    caplog.set_level(logging.INFO, logger="hnsdpo")
    cfg = load_config(PROFILE, base_overrides)
    node = dag.pipeline(cfg)[0]
    m = runner.execute_stage(cfg, node, {})
    started = [r.getMessage() for r in caplog.records if ": started (" in r.getMessage()]
    assert started == [f"stage data: started ({m.key}) building in {root / 'data' / f'.tmp-{m.key}-{os.getpid()}'}"]
    caplog.clear()
    runner.execute_stage(cfg, node, {})  # complete: no started line
    assert not [r for r in caplog.records if ": started (" in r.getMessage()]


# --- errors said once ------------------------------------------------------------------------------------

def test_deterministic_errors_are_not_retried_io_errors_are():
    from prefect.states import Failed

    from conf import ConfigError
    from tasks.corpus.loaders import BadRowError

    for exc in (BadRowError("f: row 1 (line 2)", "q", "missing_field"), ConfigError("x: unknown key"),
                FileNotFoundError("nope"), DeterministicError("same again"), KeyError("k")):
        assert is_deterministic(exc)
        assert retry_unless_deterministic(None, None, Failed(data=exc)) is False
    for exc in (ConnectionResetError("reset"), TimeoutError("slow"), OSError(5, "I/O error"), RuntimeError("?")):
        assert not is_deterministic(exc)
        assert retry_unless_deterministic(None, None, Failed(data=exc)) is True


@pytest.mark.usefixtures("prefect_api")
def test_bad_row_runs_once_io_error_is_retried(fake_stages, root, base_overrides):
    from flows.pipeline import hnsdpo
    from tasks.corpus.loaders import BadRowError

    overrides = [*base_overrides, "orchestration.retries=2", "tracking.enabled=false"]
    root.mkdir(parents=True)
    (root / "badrow-data").touch()
    with pytest.raises(BadRowError, match="row 2 \\(line 3\\): field 'question': missing_field"):
        hnsdpo(str(PROFILE), overrides, until="data")
    assert fake_stages.calls(root) == ["data"]  # no retry
    (root / "badrow-data").unlink()
    (root / "ioerror-data").touch()
    hnsdpo(str(PROFILE), overrides, until="data")
    assert fake_stages.calls(root) == ["data", "data", "data"]  # the I/O error was retried


# --- runs that end cleanly ---------------------------------------------------------------------------------

def test_end_status_of_interrupts():
    from prefect.exceptions import TerminationSignal

    assert tracking.end_status(None) == "FINISHED"
    assert tracking.end_status(ValueError("x")) == "FAILED"
    assert tracking.end_status(KeyboardInterrupt()) == "KILLED"
    assert tracking.end_status(TerminationSignal(signal.SIGTERM)) == "KILLED"
    assert tracking.end_message(TerminationSignal(signal.SIGTERM)) == "killed: SIGTERM"
    assert "SIGINT" in tracking.end_message(KeyboardInterrupt())


def test_stale_running_runs_are_marked_failed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(tmp_path)
    exp = client.create_experiment("e")
    dead = {"hnsdpo.host": __import__("socket").gethostname(), "hnsdpo.pid": str(_dead_pid())}
    stale = client.create_run(exp, run_name="killed-hard", tags=dead).info.run_id
    child = client.create_run(exp, run_name="dpo/weighted",
                              tags={"mlflow.parentRunId": stale}).info.run_id
    live = client.create_run(exp, run_name="still-running", tags=tracking.owner_tags()).info.run_id
    other = client.create_run(exp, run_name="other-host",
                              tags={"hnsdpo.host": "elsewhere", "hnsdpo.pid": "1"}).info.run_id
    new = tracking.open_run.fn(uri, "e", None, "next-run")
    for run_id in (stale, child):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED", run.info.run_name
        assert run.data.tags[tracking.END_REASON_TAG].startswith("stale: ")
    assert "is gone" in client.get_run(stale).data.tags[tracking.END_REASON_TAG]
    for run_id in (live, other, new):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert client.get_experiment_by_name("e").tags["mlflow.experimentKind"] == "custom_model_development"


def _kill_script(root: Path, overrides: list[str]) -> str:
    return (f"import sys; sys.path.insert(0, {str(HERE)!r}); sys.path.insert(0, {str(ROOT)!r})\n"
            "import fake_pipeline\n"
            f"fake_pipeline.hnsdpo({str(PROFILE)!r}, {overrides!r}, until='dpo')\n")


@pytest.mark.slow  # a flow in a subprocess (~30 s on 2 busy cores)
@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_mlflow_runs_killed_and_flow_run_crashed(fake_stages, root, base_overrides, sig):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    overrides = [*base_overrides, "orchestration.strategies=[weighted]"]
    root.mkdir(parents=True)
    (root / "slow-dpo").touch()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1",
           "HNSDPO_PROGRESS": "lines"}
    # A shell without job control starts background commands with SIGINT ignored, and the child would
    # inherit that (Python then installs no KeyboardInterrupt handler): give it the default, as a terminal does.
    proc = subprocess.Popen([sys.executable, "-c", _kill_script(root, overrides)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while "dpo/weighted" not in fake_stages.calls(root):
            assert proc.poll() is None and time.time() < deadline, "flow did not reach dpo"
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "stage dpo/weighted: started (" in out
    client = _client(root)
    exp = client.get_experiment_by_name("hnsdpo-tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    parent = next(r for r in runs.values() if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED", out[-3000:]
    assert runs["dpo/weighted"].info.status == "KILLED"
    assert runs["sft"].info.status == "FINISHED"
    assert tracking.END_REASON_TAG in runs["dpo/weighted"].data.tags
    with get_client(sync_client=True) as pc:
        state = pc.read_flow_run(parent.data.tags["prefect_flow_run_id"]).state
    assert state.type.value in ("CRASHED", "CANCELLED"), state


# --- CLI: plan, runs, stage, gc, --version ------------------------------------------------------------------

def _args(overrides):
    return [x for o in overrides for x in ("-o", o)]


def test_cli_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("hnsdpo 0.")


def test_cli_plan_shows_cached_resumes_and_will_run(fake_stages, root, base_overrides):
    cfg = load_config(PROFILE, base_overrides)
    nodes = dag.pipeline(cfg)
    data = runner.execute_stage(cfg, nodes[0], {})
    runner.execute_stage(cfg, nodes[1], {"data": data})
    keys = dag.plan_keys(cfg, nodes)
    (root / "sft" / f".tmp-{keys['sft']}").mkdir(parents=True)  # a checkpointing stage was interrupted
    res = CliRunner().invoke(app, ["plan", "-c", str(PROFILE), *_args(base_overrides)])
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln for ln in res.output.splitlines()[1:-1]}
    assert keys["data"] in lines["data"] and "cached" in lines["data"]
    assert "cached" in lines["base"] and "resumes" in lines["sft"] and "will run" in lines["report"]
    assert res.output.splitlines()[-1] == f"2 cached  1 resumes  {len(nodes) - 3} will run  ({len(nodes)} nodes)"
    assert fake_stages.calls(root) == ["data", "base"]  # plan ran nothing


def test_cli_gc_lists_then_removes_unreferenced_and_leftovers(fake_stages, root, base_overrides, tmp_path):
    cfg = load_config(PROFILE, base_overrides)
    data = runner.execute_stage(cfg, dag.pipeline(cfg)[0], {})
    old = root / "dpo" / "0123456789abcdef"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text("{}")
    leftover = root / "data" / f".tmp-{data.key}-{_dead_pid()}"
    leftover.mkdir()
    keep = root / "sft" / f".tmp-{dag.plan_keys(cfg, dag.pipeline(cfg))['sft']}"
    keep.mkdir(parents=True)
    live = root / "data" / f".tmp-{data.key}-{os.getpid()}"
    live.mkdir()
    profile = tmp_path / "p.yaml"
    profile.write_text(f"extends: {PROFILE}\norchestration: {{artifacts_root: {root}, "
                       "strategies: [weighted, random]}\n")
    cli = CliRunner()
    res = cli.invoke(app, ["gc", "-c", str(profile)])
    assert res.exit_code == 0, res.output
    assert str(old) in res.output and str(leftover) in res.output and "nothing removed" in res.output
    assert str(data.path) not in res.output and str(keep) not in res.output and str(live) not in res.output
    assert old.exists() and leftover.exists()
    res = cli.invoke(app, ["gc", "-c", str(profile), "--yes"])
    assert res.exit_code == 0 and "removed 2 folders" in res.output
    assert not old.exists() and not leftover.exists() and data.path.exists() and keep.exists() and live.exists()
    bad = cli.invoke(app, ["gc", "-c", str(tmp_path / "missing.yaml"), "--yes"])
    assert bad.exit_code == 2 and "removes nothing" in bad.output


@pytest.mark.usefixtures("prefect_api")
def test_cached_rerun_links_producer_and_cli_runs_and_stage(fake_stages, root, base_overrides):
    from flows.pipeline import hnsdpo

    overrides = [*base_overrides, "orchestration.strategies=[weighted]"]
    first = hnsdpo(str(PROFILE), overrides, until="sft")
    second = hnsdpo(str(PROFILE), overrides, until="sft")
    client = _client(root)
    exp = client.get_experiment_by_name("hnsdpo-tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    by_parent = {}
    for parent in (first, second):
        runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent['mlflow_run_id']}'")
        by_parent[parent["mlflow_run_id"]] = {r.info.run_name: r for r in runs}
    made, cached = by_parent[first["mlflow_run_id"]], by_parent[second["mlflow_run_id"]]
    for name in ("data", "base", "sft"):
        assert cached[name].data.tags["cached"] == "true"
        assert cached[name].data.tags["produced_by_run_id"] == made[name].info.run_id
        assert made[name].info.run_id in cached[name].data.tags["mlflow.note.content"]
        assert client.list_artifacts(cached[name].info.run_id) == []  # nothing uploaded again
        assert client.list_artifacts(made[name].info.run_id, "stage")

    cli = CliRunner()
    res = cli.invoke(app, ["runs", "-c", str(PROFILE), *_args(overrides), "-n", "2"])
    assert res.exit_code == 0, res.output
    heads = [ln for ln in res.output.splitlines() if not ln.startswith(" ")]
    assert len(heads) == 2 and all(" FINISHED " in h for h in heads)
    assert heads[0].endswith(f"run {second['mlflow_run_id'][:8]}")
    stage_lines = [ln.split() for ln in res.output.splitlines() if ln.startswith("    ")]
    assert [s[:2] for s in stage_lines] == [["data", "cached"], ["base", "cached"], ["sft", "cached"],
                                            ["data", "ran"], ["base", "ran"], ["sft", "ran"]]
    res = cli.invoke(app, ["stage", "sample", "-c", str(PROFILE), *_args(overrides)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("stage sample: ran (") and fake_stages.calls(root)[-1] == "sample"
    res = cli.invoke(app, ["stage", "pairs", "-c", str(PROFILE), *_args(overrides)])
    assert res.exit_code == 1 and "needs verify" in res.output
    res = cli.invoke(app, ["plan", "-c", str(PROFILE), *_args(overrides), "--until", "sample"])
    assert res.exit_code == 0 and all(" cached " in ln and "last: cached in run" in ln
                                      for ln in res.output.splitlines()[1:4]), res.output


# --- deployments and the browser check ------------------------------------------------------------------------

def test_serve_script_writes_env_and_readme_commands_use_it():
    serve = (ROOT / "scripts" / "serve.sh").read_text()
    assert '"$RUN_DIR/env"' in serve and "export PREFECT_API_URL=" in serve
    out = subprocess.run(["bash", str(ROOT / "scripts" / "serve.sh"), "env"], capture_output=True, text=True,
                         env={**os.environ, "PREFECT_PORT": "4321", "HNSDPO_SERVE_DIR": "/tmp/hnsdpo-serve-test"})
    assert out.stdout.strip() == "export PREFECT_API_URL=http://127.0.0.1:4321/api"
    readme = (ROOT / "README.md").read_text()
    block = readme.split("- **Deployments.**", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    cmds = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert cmds[0] == "source .serve/env" and cmds[1].startswith(".venv/bin/prefect deployment run hnsdpo/full ")
    assert "--watch" in cmds[1]


@pytest.mark.slow  # starts mlflow ui and a headless Chromium
def test_mlflow_ui_screenshot_script(tmp_path):
    import shutil

    browser = os.environ.get("CHROMIUM") or next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "headless_shell")
         if shutil.which(b)), None)
    if not browser:
        pytest.skip("no chromium on this machine")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(tmp_path)
    exp = tracking._experiment_id(client, "hnsdpo-ui", (tmp_path / "mlruns").as_uri())
    client.create_run(exp, run_name="hnsdpo-ui-check")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "mlflow_ui_screenshot.sh"), uri, str(tmp_path / "ui"), exp],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CHROMIUM": browser, "WORKFLOW": "machine_learning"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "workflowType=machine_learning" in out.stdout  # the link `hnsdpo run` prints
    assert (tmp_path / "ui.png").stat().st_size > 10_000
    dom = (tmp_path / "ui.html").read_text()
    assert "hnsdpo-ui-check" in dom


@pytest.mark.usefixtures("prefect_api")
def test_sampling_and_engine_lines_go_through_the_run_logger():
    """The sample stage's engine, resume and per-shard lines (and the vLLM timing line) resolve the logger
    at call time, so inside a flow they reach the Prefect run logger (the console and ``--watch``)."""
    from prefect import flow

    import tasks.generation.engine
    import tasks.generation.sampling

    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append((record.name, record.getMessage()))

    @flow(name="log-check")
    def f():
        tasks.generation.sampling.log.info("sample: shard 1/2 done")
        tasks.generation.engine.log_.info("vllm: one engine")

    handler = Catch()
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    try:
        f()
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    assert ("prefect.flow_runs", "sample: shard 1/2 done") in seen
    assert ("prefect.flow_runs", "vllm: one engine") in seen
