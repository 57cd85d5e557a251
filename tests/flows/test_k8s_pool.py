"""The Kubernetes GPU work pool: prefect-k8s.yaml's job variables against docker/k8s-gpu-base-job-template.json,
and the pool + deployment registered on a throw-away Prefect API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "docker" / "k8s-gpu-base-job-template.json"


def _gpu_deployment() -> dict:
    spec = yaml.safe_load((ROOT / "prefect-k8s.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "full-gpu"]
    return dep


def test_template_declares_every_placeholder():
    tmpl = json.loads(TEMPLATE.read_text())
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(tmpl["job_configuration"])))
    declared = set(tmpl["variables"]["properties"])
    assert used <= declared and {"image", "gpu_count", "artifacts_pvc", "namespace"} <= used


def test_gpu_deployment_job_variables_validate_and_render():
    from prefect.utilities.templating import apply_values

    tmpl = json.loads(TEMPLATE.read_text())
    dep = _gpu_deployment()
    assert dep["work_pool"]["name"] == "hnsdpo-k8s-gpu" and dep["entrypoint"] == "flows/pipeline.py:hnsdpo"
    jv = dep["work_pool"]["job_variables"]
    assert set(jv) <= set(tmpl["variables"]["properties"])
    jsonschema.validate(jv, tmpl["variables"])
    values = {k: v.get("default") for k, v in tmpl["variables"]["properties"].items()} | jv
    job = apply_values(tmpl["job_configuration"], values)
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == jv["image"] == "hnsdpo:gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["memory"] == "64Gi"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "hnsdpo-artifacts"
    assert {"name": "artifacts", "mountPath": "/app/artifacts"} in container["volumeMounts"]
    assert "orchestration.artifacts_root=/app/artifacts" in dep["parameters"]["overrides"]


def test_gpu_deployment_profile_loads():
    from conf import load_config

    dep = _gpu_deployment()
    cfg = load_config(ROOT / dep["parameters"]["profile"], dep["parameters"]["overrides"])
    assert cfg.orchestration.artifacts_root == "/app/artifacts" and cfg.model.quantization == "4bit"


@pytest.mark.slow
def test_pool_and_gpu_deployment_register(prefect_api):
    from prefect.settings import PREFECT_API_URL

    prefect = str(Path(sys.executable).parent / "prefect")
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())

    def run(*args):
        r = subprocess.run([prefect, "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout

    run("work-pool", "create", "hnsdpo-k8s-gpu", "--type", "kubernetes", "--base-job-template", str(TEMPLATE))
    out = run("deploy", "--all", "--prefect-file", "prefect-k8s.yaml")
    assert "hnsdpo/full-gpu" in out
    shown = run("deployment", "inspect", "hnsdpo/full-gpu")
    assert "hnsdpo-k8s-gpu" in shown and "gpu_count" in shown
