"""``accelerate launch`` with 2 CPU processes (gloo): the weighted DPO gradient does not depend on the
split of the global batch, and SFT and DPO train on the tiny model (scripts/distributed_tiny.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).parent / "accelerate"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ACCELERATE.exists(), reason="no accelerate CLI")]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(n: int, mode: str, target: Path) -> None:
    launcher = "--multi_gpu" if n > 1 else "--cpu"  # --multi_gpu: the torch-distributed launcher (refuses n=1)
    cmd = [str(ACCELERATE), "launch", launcher, "--num_processes", str(n), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_port()),
           str(ROOT / "scripts" / "distributed_tiny.py"), mode, str(target)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_two_process_weighted_dpo_gradient_equals_one_process(tmp_path):
    import torch

    _launch(1, "grad", tmp_path / "g1.pt")
    _launch(2, "grad", tmp_path / "g2.pt")
    one, two = torch.load(tmp_path / "g1.pt"), torch.load(tmp_path / "g2.pt")
    assert (one["world"], two["world"], two["backend"]) == (1, 2, "gloo")
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 0
    for name, g in one["grads"].items():
        assert g.abs().max() > 0 or name.endswith("bias")
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_sft_and_dpo_train_on_two_cpu_processes(tmp_path):
    _launch(2, "train", tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["world_size"], result["backend"]) == (2, "gloo")
    # 8 examples, per-device batch 2, 2 processes: 2 optimizer steps each
    assert result["sft"]["steps"] == 2 and result["dpo"]["steps"] == 2 and result["dpo"]["pairs"] == 8
    assert (tmp_path / "run" / "sft" / "adapter").is_dir() and (tmp_path / "run" / "dpo" / "adapter").is_dir()
