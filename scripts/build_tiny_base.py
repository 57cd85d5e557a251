"""Pretrain a profile's from-scratch base once and keep snapshots along the way, to ship one as a file.

A from-scratch base is a function of its recipe *and of the CPU's floating-point kernels*: the same profile,
seeds and cache keys gave an SFT model of 65.3% on one machine and 88.4% on another (docs/results/tiny.md).
A testbed that must land in an accuracy band on every machine therefore starts from weights that are trained
once and shipped (``assets/``), not from a recipe. This script trains the profile's base exactly as the base
stage does (same corpus, tokenizer, recipe, seed and thread count: :func:`training.tiny.build_tiny_model`'s
steps: it calls :func:`training.tiny.build_tiny_model`), and additionally saves the weights at ``--snapshots``
steps, so one run yields several candidates. Saving does not change the training (the callback only reads the
weights; a test holds the final weights equal to the base stage's).

    .venv/bin/python scripts/build_tiny_base.py -c conf/ablation-tiny.yaml \
        -o model.build_from_scratch=true --snapshots 2000 3000 4000 5000 --out /tmp/base

Each snapshot folder (``step-<n>``, and ``final``) is a loadable model: weights, tokenizer and a
``provenance.json`` (profile, overrides, recipe, corpus key, step, commit, CPU, torch version, times, loss).
``scripts/tiny_quality.py`` or ``scripts/testbed_stability.py`` then measure SFT on each.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    return name + (" (AVX-512)" if "avx512f" in text else " (no AVX-512)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", default="conf/ablation-tiny.yaml")
    ap.add_argument("-o", "--override", action="append", default=[], help="key=value, as in `hnsdpo run -o`")
    ap.add_argument("--snapshots", type=int, nargs="*", default=[], help="steps at which to save the weights")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    from conf import load_config
    from conf.loader import config_hash
    from tasks.common.artifacts import describe_files
    from tasks.common.provenance import git_commit
    from tasks.data import run_data
    from tasks.orchestration.plan import pretrain_corpus
    from training.tiny import build_tiny_model, split_documents

    cfg = load_config(args.config, args.override)
    if not cfg.model.build_from_scratch:
        ap.error("the profile loads its base (model.build_from_scratch is false); pass "
                 "-o model.build_from_scratch=true to pretrain the recipe it describes")
    tcfg = cfg.model.tiny
    bad = [s for s in args.snapshots if not 0 < s < tcfg.max_steps]
    if bad:
        ap.error(f"--snapshots {bad}: each must lie between 0 and model.tiny.max_steps ({tcfg.max_steps})")
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.out / "data"
    if not (data_dir / "pretrain.txt").is_file():
        data_dir.mkdir(exist_ok=True)
        run_data(cfg, data_dir)
    docs = split_documents((data_dir / "pretrain.txt").read_text(encoding="utf-8"))
    info = {
        "profile": args.config, "overrides": args.override, "recipe": tcfg.model_dump(mode="json"),
        "corpus": pretrain_corpus(cfg), "corpus_key": config_hash(pretrain_corpus(cfg)), "documents": len(docs),
        "commit": git_commit(ROOT, short=True, dirty=True), "cpu": cpu_name(), "threads": tcfg.threads or torch.get_num_threads(),
        "torch": torch.__version__, "script": "scripts/build_tiny_base.py",
    }
    t0 = time.time()
    recent: list[float] = []

    def write(folder: Path, step: int, extra: dict | None = None) -> None:
        row = {**info, **(extra or {}), "step": step, "seconds": round(time.time() - t0, 1),
               "loss_last_100": sum(recent[-100:]) / max(1, len(recent[-100:])),
               "files": {name: d["sha256"] for name, d in describe_files(folder).items()
                         if name != "provenance.json"}}
        (folder / "provenance.json").write_text(json.dumps(row, indent=2) + "\n")
        print(f"saved {folder} at step {step} ({row['seconds']:.0f} s, loss {row['loss_last_100']:.4f})", flush=True)

    def snapshot(step: int, model, tok) -> None:
        folder = args.out / f"step-{step}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        write(folder, step, {"params": sum(p.numel() for p in model.parameters())})

    def progress(step: int, loss: float) -> None:
        recent.append(loss)
        if step % 500 == 0:
            print(f"step {step}/{tcfg.max_steps} loss {sum(recent[-100:]) / len(recent[-100:]):.4f} "
                  f"{time.time() - t0:.0f} s", flush=True)

    metrics = build_tiny_model(docs, tcfg, args.out / "final", progress=progress,
                               snapshot_steps=args.snapshots, snapshot=snapshot)
    write(args.out / "final", tcfg.max_steps, {"params": metrics["params"], "blocks": metrics["blocks"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
