"""Golden DPO loss curve: ``train_dpo`` on the tiny test model, fixed pairs, weights and seeds, on CPU with
one torch thread, logged every step; the per-step loss, unweighted loss, rewards, log-probs and gradient norm
and the displacement diagnostic must equal ``golden/dpo_loss_tiny.json``. A change to the weighted loss, its
reduction, the reference pass, the metrics or the trainer's arguments shows up here as a diff.

After an intended change, regenerate the file and review its diff::

    HNSDPO_UPDATE_GOLDEN=1 PYTHONPATH=$PWD bash scripts/run-tests.sh tests/training/test_dpo_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conf.schema import DPOConfig, LoraConfig, ModelConfig
from training.dpo import dpo_example, train_dpo

GOLDEN = Path(__file__).parent / "golden" / "dpo_loss_tiny.json"
UPDATE = os.environ.get("HNSDPO_UPDATE_GOLDEN") == "1"
# float32 on one thread reproduces bit for bit on one machine; the tolerance absorbs other CPUs' kernels
# and stays far below what a 1% change of beta does (about 1e-2 relative on the rewards, 3e-4 on the
# smallest reward here). Another CPU (an AMD EPYC against the machine that wrote the file) differed by up to
# 1.1e-5 absolute / 6e-5 relative: a reward is beta times a difference of summed log-probs (tens of nats),
# so its float32 rounding is absolute, not relative to the (sometimes small) reward.
RTOL, ATOL = 1e-4, 5e-5

PAIRS = [
    ("What is 2 + 3?", "2 + 3 = 5. #### 5", "2 + 3 = 6. #### 6", 0.5),
    ("Tom has 4 apples and eats 1. How many are left?", "4 - 1 = 3. The answer is \\boxed{3}.",
     "4 + 1 = 5. #### 5", 1.0),
    ("What is 12/60?", "12/60 = 0.2 #### 0.2", "12/60 = 5 so #### 5", 1.5),
    ("Weng earns $12 an hour for 50 minutes.", "12/60 = 0.2 per minute. 0.2 x 50 = 10. #### 10",
     "#### 600", 2.0),
]
STEP_KEYS = ("loss", "loss/unweighted", "rewards/chosen", "rewards/rejected", "rewards/margins",
             "rewards/accuracies", "logps/chosen", "logps/rejected", "weight/mean", "grad_norm")
RUN_KEYS = ("logps_chosen_delta", "logps_rejected_delta", "share_chosen_logp_fell")
CFG = DPOConfig(
    beta=0.5, learning_rate=5e-3, max_steps=6, batch_size=2, max_length=96, max_prompt_length=48,
    lora=LoraConfig(r=4, alpha=8, dropout=0.0), warmup_ratio=0.0, lr_scheduler="constant",
    save_steps=100, logging_steps=1, displacement_pairs=4, seed=0,
)
# the two losses the trainer computes: the weighted sigmoid loss alone, and with the NLL term (rpo_alpha)
CASES = {"weighted": CFG, "weighted+nll": CFG.model_copy(update={"rpo_alpha": 0.5})}


def dpo_curve(model_dir: Path, out: Path, cfg: DPOConfig = CFG) -> dict:
    """The logged curve of a fixed weighted DPO run (one CPU thread, seeded), as the golden file stores it."""
    rows = [dpo_example(q + "\nPlease reason step by step.", c, r, w) for q, c, r, w in PAIRS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)
        model_cfg = ModelConfig(name_or_path=str(model_dir), dtype="float32")
        result = train_dpo(model_dir, rows, cfg, model_cfg, out)
    finally:
        torch.set_num_threads(threads)
    keys = STEP_KEYS + (("nll",) if cfg.rpo_alpha else ())
    logged = [r for r in result.log_history if "loss" in r]
    return {
        "steps": [{"step": r["step"], **{k: float(r[k]) for k in keys}} for r in logged],
        "run": {k: float(result.metrics[k]) for k in RUN_KEYS},
    }


def _update_golden(case: str, curve: dict) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    golden[case] = curve
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({k: golden[k] for k in sorted(golden)}, indent=1) + "\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_weighted_dpo_matches_the_golden_curve(tiny_model_dir, tmp_path, case):
    got = dpo_curve(tiny_model_dir, tmp_path, CASES[case])
    assert [s["step"] for s in got["steps"]] == list(range(1, CFG.max_steps + 1))
    if UPDATE:
        _update_golden(case, got)
        pytest.skip(f"rewrote {case!r} in {GOLDEN}")
    assert GOLDEN.is_file(), f"no {GOLDEN}: regenerate it with HNSDPO_UPDATE_GOLDEN=1 (module docstring)"
    want = json.loads(GOLDEN.read_text())[case]
    assert len(got["steps"]) == len(want["steps"])
    for g, w in zip(got["steps"], want["steps"], strict=True):
        assert g.keys() == w.keys()
        for key in w:
            assert g[key] == pytest.approx(w[key], rel=RTOL, abs=ATOL), f"{case} step {w['step']} {key}"
    for key in want["run"]:
        assert got["run"][key] == pytest.approx(want["run"][key], rel=RTOL, abs=ATOL), f"{case} {key}"
    # the curve is a real one: the loss moves off log 2 and the weights reach the loss
    assert want["steps"][-1]["loss/unweighted"] < want["steps"][0]["loss/unweighted"] - 0.05
    assert any(abs(s["loss"] - s["loss/unweighted"]) > 1e-3 for s in want["steps"])
