"""What can be checked offline about prefect.yaml, the Docker images and the compose stack."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conf import load_config

ROOT = Path(__file__).resolve().parents[2]
POOL = "hnsdpo-process"


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def _console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def _pinned() -> set[str]:
    lines = (ROOT / "requirements" / "main.txt").read_text().splitlines()
    return {ln.split("==")[0].lower() for ln in lines if "==" in ln}


def _check_command(argv: list[str]) -> None:
    """The program a container runs exists in the project: a console script, a pinned CLI, make, a script."""
    prog = argv[0]
    if prog == "bash" and argv[1] == "-c":
        for part in argv[2].split("&&"):
            _check_command(shlex.split(part))
        return
    if prog == "make":
        assert set(argv[1:]) <= _make_targets(), argv
    elif prog in ("prefect", "mlflow"):
        assert prog in _pinned(), argv
    elif prog == "hnsdpo":
        assert prog in _console_scripts() and argv[1] in {"run", "config", "verifier-report"}, argv
    elif prog == "bash":
        assert (ROOT / argv[1]).is_file(), argv
    else:
        pytest.fail(f"unknown program in a container command: {argv}")
    if prog == "prefect" and argv[1:3] == ["worker", "start"]:
        assert argv[argv.index("--pool") + 1] == POOL


def _check_deployments(prefect_file: Path) -> dict[str, dict]:
    """Every deployment of ``prefect_file`` names a flow that imports from its entrypoint, accepts the
    deployment's parameters and whose profile (with the overrides) validates; returns them by name."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(prefect_file.read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    for d in deps.values():
        path, _, func = d["entrypoint"].partition(":")
        assert (ROOT / path).is_file() and func, d["entrypoint"]
        flow = load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
        d["flow_name"] = flow.name
        flow.validate_parameters(d["parameters"])
        d["config"] = load_config(ROOT / d["parameters"]["profile"], d["parameters"]["overrides"])
    return deps


def test_prefect_yaml_deployments_load_and_validate():
    deps = _check_deployments(ROOT / "prefect.yaml")
    assert set(deps) == {"full", "reevaluate", "ablation"}
    expected_flow = {"full": "hnsdpo", "reevaluate": "reevaluate", "ablation": "ablation"}
    for name, d in deps.items():
        assert d["work_pool"]["name"] == POOL
        assert d["flow_name"] == expected_flow[name]  # so `prefect deployment run hnsdpo/full` names it
        if name == "reevaluate":
            assert {e.format for e in d["config"].data.eval} == {"gsm8k", "math"}
            for e in d["config"].data.eval:  # paths are relative to the project root (the worker's cwd)
                assert e.path.startswith("../shared/data/")
    (sched,) = deps["reevaluate"]["schedules"]
    from prefect.client.schemas.schedules import CronSchedule

    CronSchedule(cron=sched["cron"], timezone=sched["timezone"])
    assert "schedules" not in deps["full"]


def test_compose_stack_and_image_commands():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow", "worker"} <= set(services)
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["worker"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    for name, svc in services.items():
        if "build" in svc:
            assert (ROOT / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / "docker" / src).is_file(), (name, vol)
        if svc.get("image", "").startswith("hnsdpo:") and "command" in svc:
            _check_command(svc["command"])


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfiles_copy_existing_paths_and_run_project_commands(dockerfile):
    text = (ROOT / "docker" / dockerfile).read_text()
    copies = re.findall(r"^COPY (?!--from)(.+?) \S+$", text, flags=re.M)
    assert copies
    for line in copies:
        for src in line.split():
            assert (ROOT / src.rstrip("/")).exists(), f"{dockerfile}: COPY {src}"
    for req in re.findall(r"requirements/[\w.-]+\.txt", text):
        assert (ROOT / req).is_file(), req
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.M)
    _check_command(yaml.safe_load(cmd))
    assert "-e ." in text and ".venv-vllm" in text
    if dockerfile == "Dockerfile":
        assert re.search(r"^FROM nvidia/cuda:", text, flags=re.M) and "vllm-cuda.txt" in text


STUB = """#!{python}
import json, os, sys, time
with open({log!r}, "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
if sys.argv[1:3] in (["server", "start"], ["worker", "start"]):
    time.sleep(120)  # a long-running service, until `serve.sh stop` ends it
"""


def _make_recipe(target: str) -> list[str]:
    """The command lines ``make <target>`` runs, from ``make -n`` (the environment set-up is taken as done;
    run for real, make would export its own ``VENV``)."""
    out = subprocess.run(["make", "-n", "-o", "setup", "-o", ".venv/.stamp", target], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.strip()]


def _fake_venv(tmp_path: Path, log: Path) -> Path:
    """A venv whose ``prefect`` and ``python`` record their arguments in ``log`` (services then sleep)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("prefect", "python"):
        (bin_dir / name).write_text(STUB.format(python=sys.executable, log=str(log)))
        (bin_dir / name).chmod(0o755)
    return bin_dir.parent


def _calls(log: Path, want: str, timeout: float = 20.0) -> list[list[str]]:
    """The recorded calls, once one starting with the words of ``want`` is there (services start detached)."""
    deadline = time.monotonic() + timeout
    while True:
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if any(" ".join(c).startswith(want) for c in calls) or time.monotonic() > deadline:
            return calls
        time.sleep(0.1)


def _run_recipe(recipe: list[str], env: dict[str, str]) -> None:
    for line in recipe:
        out = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (line, out.stdout + out.stderr)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_deploys_prefect_yaml_to_the_pool_it_creates_and_stop_serve_ends_it(tmp_path):
    """``make serve`` and ``make stop-serve`` run as the Makefile says, against a Prefect CLI that records its
    calls: the server starts on loopback, the work pool that ``serve.sh`` creates is the pool every deployment
    of the file it deploys targets and the one its worker polls, every deployment of that file resolves to an
    importable flow that accepts its parameters, and ``stop-serve`` ends the processes that ``serve`` started."""
    log, serve_dir = tmp_path / "calls.jsonl", tmp_path / "serve"
    env = {k: v for k, v in os.environ.items() if k not in ("HNSDPO_WORK_POOL", "PREFECT_FILE")}
    env.update(VENV=str(_fake_venv(tmp_path, log)), HNSDPO_SERVE_DIR=str(serve_dir), PREFECT_PORT="14200")
    pids: list[int] = []
    try:
        _run_recipe(_make_recipe("serve"), env)
        pids = [int((serve_dir / f"{n}.pid").read_text()) for n in ("server", "worker")]
        calls = [c[1:] for c in _calls(log, "prefect worker start") if c[0] == "prefect"]
        (server,) = [c for c in calls if c[:2] == ["server", "start"]]
        assert server[server.index("--host") + 1] == "127.0.0.1" and server[server.index("--port") + 1] == "14200"
        (pool,) = [c[2] for c in calls if c[:2] == ["work-pool", "create"]]
        (deploy,) = [c for c in calls if "deploy" in c]
        assert "--all" in deploy
        deps = _check_deployments(ROOT / deploy[deploy.index("--prefect-file") + 1])
        assert deps and {d["work_pool"]["name"] for d in deps.values()} == {pool}
        (worker,) = [c for c in calls if c[:2] == ["worker", "start"]]
        assert worker[worker.index("--pool") + 1] == pool
        assert "export PREFECT_API_URL=http://127.0.0.1:14200/api" in (serve_dir / "env").read_text()
        assert all(_alive(p) for p in pids)

        _run_recipe(_make_recipe("stop-serve"), env)
        assert not any(_alive(p) for p in pids)
        assert not list(serve_dir.glob("*.pid")) and not (serve_dir / "env").exists()
    finally:
        for p in pids:
            if _alive(p):
                os.killpg(p, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not ended (a zombie that no init has reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")
