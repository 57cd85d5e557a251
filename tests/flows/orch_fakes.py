"""Cheap fake stage functions with the stage signature (``tasks.orchestration.stages``) for orchestration tests.

Each appends its node to ``<root>/calls.log`` (``root`` = the artifacts root, two levels above ``out``)
so tests can see which stages actually executed, and fails when ``<root>/fail-<stage>`` exists.
Training fakes call their ``callbacks`` like a transformers Trainer would (``on_log``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

VERSION = "1"


def _enter(out: Path, name: str) -> None:
    """Record the call; ``fail-<stage>`` raises RuntimeError, ``badrow-<stage>`` a BadRowError,
    ``ioerror-<stage>`` an OSError once (then removed), ``slow-<stage>`` sleeps up to 120 s (for kills)."""
    root = Path(out).parent.parent
    with (root / "calls.log").open("a") as f:
        f.write(name + "\n")
    stage = name.split("/")[0]
    if (root / f"fail-{stage}").exists():
        raise RuntimeError(f"injected failure in {name}")
    if (root / f"badrow-{stage}").exists():
        from tasks.corpus.loaders import BadRowError

        raise BadRowError(f"{root}/bad.jsonl: row 2 (line 3)", "question", "missing_field")
    if (root / f"ioerror-{stage}").exists():
        (root / f"ioerror-{stage}").unlink()
        raise ConnectionResetError(f"injected I/O error in {name}")
    if (root / f"slow-{stage}").exists():
        import time

        for _ in range(1200):
            time.sleep(0.1)


def _train(callbacks, steps: int = 3) -> None:
    for step in range(1, steps + 1):
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        for cb in callbacks:
            cb.on_log(None, state, None, logs={"loss": 1.0 / step, "learning_rate": 1e-3, "note": "x"})


def calls(root: Path) -> list[str]:
    p = Path(root) / "calls.log"
    return p.read_text().split() if p.exists() else []


def run_data(cfg, inputs, out, callbacks=()):
    _enter(out, "data")
    (out / "eval").mkdir()
    (out / "eval" / "synthetic_test.jsonl").write_text('{"id": "t-0"}\n{"id": "t-1"}\n')
    if cfg.data.validation.n:
        (out / "eval" / f"synthetic_{cfg.data.validation.name}.jsonl").write_text('{"id": "v-0"}\n')
    (out / "pool.jsonl").write_text('{"id": "p-0"}\n')
    return {"n_eval": 2, "n_pool": 1}


def run_base(cfg, inputs, out, callbacks=()):
    _enter(out, "base")
    (out / "model").mkdir()
    (out / "model" / "weights.bin").write_bytes(b"0" * 64)  # a "full model": never logged to MLflow
    (out / "model.json").write_text(json.dumps({"base": "model"}))
    return {"params": 1000}


def run_sft(cfg, inputs, out, callbacks=()):
    base_dir = inputs["base"]
    _enter(out, "sft")
    _train(callbacks)
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"1" * 32)
    (out / "model.json").write_text(json.dumps({"base": str(base_dir / "model"), "adapter": "adapter"}))
    return {"train_loss": 0.5}


def run_sample(cfg, inputs, out, callbacks=()):
    _enter(out, "sample")
    (out / "samples").mkdir()
    (out / "samples" / "shard-00000.jsonl").write_text('{"problem_id": "p-0", "index": 0}\n')
    return {"n_samples": 1}


def run_verify(cfg, inputs, out, callbacks=()):
    _enter(out, "verify")
    (out / "verdicts.jsonl").write_text('{"problem_id": "p-0", "correct": false}\n')
    return {"correct_rate": 0.0, "status": {"ok": 1}}


def run_pairs(cfg, inputs, out, callbacks=()):
    strategy = cfg.pairs.strategy
    _enter(out, f"pairs/{strategy}")
    (out / "pairs.jsonl").write_text(json.dumps({"strategy": strategy}) + "\n")
    return {"n_pairs": 1, "weight_mean": 1.0}


def run_dpo(cfg, inputs, out, callbacks=()):
    sft_dir, pairs_dir = inputs["sft"], inputs["pairs"]
    strategy = json.loads((pairs_dir / "pairs.jsonl").read_text())["strategy"]
    _enter(out, f"dpo/{strategy}")
    _train(callbacks)
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"2" * 32)
    (out / "model.json").write_text(json.dumps({"base": str(sft_dir), "adapter": "adapter",
                                                "lr": cfg.dpo.learning_rate}))
    return {"train_loss": 0.25, "beta": cfg.dpo.beta, "logps_chosen_delta": -1.0}


def run_evaluate(cfg, inputs, out, callbacks=()):
    """Accuracy 0.1 / 0.3 / 0.4 for base / SFT / DPO; a DPO model's grows with its learning rate (so a
    sweep has a best point). Flat metrics, as the real stage returns them."""
    model_dir = inputs["model"]
    _enter(out, f"evaluate/{model_dir.parent.name}")
    acc = {"base": 0.1, "sft": 0.3, "dpo": 0.4}[model_dir.parent.name]
    if model_dir.parent.name == "dpo":
        acc += json.loads((model_dir / "model.json").read_text()).get("lr", 0.0)
    (out / "metrics.json").write_text(json.dumps({"synthetic_test": {"accuracy": acc}}))
    names = list(cfg.evaluate.datasets) or ["synthetic_test"]
    return {k: v for name in names for k, v in ((f"{name}/accuracy", acc), (f"{name}/n", 2))}


def run_report(cfg, evals, out, callbacks=()):
    _enter(out, "report")
    rows = ["| model | accuracy |", "| --- | --- |"]
    for label, folder in evals.items():
        acc = json.loads((Path(folder) / "metrics.json").read_text())["synthetic_test"]["accuracy"]
        rows.append(f"| {label} | {acc:.2f} |")
    (out / "report.md").write_text("\n".join(rows) + "\n")
    return {"n_models": len(evals)}


FAKES = {s: globals()[f"run_{s}"] for s in
         ("data", "base", "sft", "sample", "verify", "pairs", "dpo", "evaluate", "report")}
