"""What can be checked offline about prefect.yaml, the Docker images and the compose stack."""

from __future__ import annotations

import re
import shlex
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


def test_prefect_yaml_deployments_load_and_validate():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"full", "reevaluate", "ablation"}
    expected_flow = {"full": "hnsdpo", "reevaluate": "reevaluate", "ablation": "ablation"}
    for name, d in deps.items():
        assert d["work_pool"]["name"] == POOL
        flow = load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
        assert flow.name == expected_flow[name]  # so `prefect deployment run hnsdpo/full` names it
        flow.validate_parameters(d["parameters"])
        cfg = load_config(ROOT / d["parameters"]["profile"], d["parameters"]["overrides"])
        if name == "reevaluate":
            assert {e.format for e in cfg.data.eval} == {"gsm8k", "math"}
            for e in cfg.data.eval:  # paths are relative to the project root (the worker's cwd)
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


def test_make_serve_targets_call_the_script():
    text = (ROOT / "Makefile").read_text()
    assert "bash scripts/serve.sh start" in text and "bash scripts/serve.sh stop" in text
    serve = (ROOT / "scripts" / "serve.sh").read_text()
    assert f"HNSDPO_WORK_POOL:-{POOL}" in serve and "127.0.0.1" in serve
