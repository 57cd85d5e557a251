"""How stable is a profile's SFT model across data seeds? Base + SFT through the flow, then greedy accuracy.

For every ``data.synthetic.seed`` given, runs the pipeline until ``sft`` (cached stages are reused; each
seed gets its own artifacts root), then ``scripts/tiny_quality.py`` on the base and the SFT model: greedy
accuracy on the first N test problems, the mixed share at k samples, and the greedy errors typed by the
generator's known traps. Prints one table (and the wall time of base + SFT per seed).

    .venv/bin/python scripts/testbed_stability.py -c conf/ablation-tiny.yaml --seeds 1234 1 2 --jobs 2 --root /tmp/stab

With ``--model-seeds 0 1`` every data seed is trained once per ``model.tiny.seed`` (other initial weights and
block order, the same corpus), and the summary separates the two sources of the spread: the SFT models' range
within a data seed (the training's own noise) against the range of the data seeds' means.

``--vary pretrain`` sets ``data.synthetic.pretrain_seed`` instead (the base's corpus alone; the SFT data and
the test problems stay). With a profile that pins the pretraining corpus (conf/ablation-tiny.yaml), the data
seeds share one base; ``--one-root`` runs them in one artifacts root so that base is built once::

    .venv/bin/python scripts/testbed_stability.py --seeds 1234 2 1 --one-root --root /tmp/stab-data
    .venv/bin/python scripts/testbed_stability.py --vary pretrain --seeds 1234 2 1 --root /tmp/stab-base
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


def model_dir(root: Path, stage: str, config: str, extra: list[str]) -> Path:
    """The model that ``stage`` saved under ``root`` for the profile with ``extra`` overrides (its folder is the
    stage's key, computed from the config as the flow does): its merged weights, else its base. Several seeds
    in one root share what their keys share (a pinned pretraining corpus: one base)."""
    from conf import load_config
    from tasks.orchestration import plan
    from training.modelref import read_model_ref

    cfg = load_config(config, extra)
    folder = root / stage / plan.plan_keys(cfg, plan.pipeline(cfg, stage))[stage]
    if not (folder / "model.json").is_file():
        raise FileNotFoundError(f"no finished {stage} stage at {folder}")
    ref = read_model_ref(folder)
    return Path(ref.merged or ref.base)


def overrides(extra: list[str]) -> list[str]:
    return [arg for o in extra for arg in ("-o", o)]


def quality(config: str, model: Path, n: int, k: int, log: Path, extra: list[str]) -> dict[str, str]:
    """tiny_quality.py on ``model`` with the profile and ``extra`` overrides (the seed's among them)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "tiny_quality.py"), "-c", config, *overrides(extra), "--model", str(model), "--n", str(n), "--k", str(k), "--threads", "1"]
    out = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    log.write_text(out)
    row = re.search(r"^all\s+(\d+)\s+([\d.]+%)\s+([\d.]+%)", out, re.M)
    types = re.search(r"^greedy errors by known type \(n=(\d+), structural ([\d.]+%)\): (.*)$", out, re.M)
    return {"n": row.group(1), "greedy": row.group(2), "mixed": row.group(3),
            "structural": types.group(2) if types else "-", "types": types.group(3) if types else "-"}


def chain(config: str, art: Path, log: Path, extra: list[str]) -> subprocess.Popen:
    """base -> SFT for one cell (``extra``: its overrides, the seed's among them) through the flow (cached stages
    are reused), in the background."""
    return subprocess.Popen([str(ROOT / ".venv" / "bin" / "hnsdpo"), "run", "-c", config, *overrides(extra), "-o",
                             f"orchestration.artifacts_root={art}",
                             "--until", "sft"], env=ENV, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


SEED_KEYS = {"data": "data.synthetic.seed", "pretrain": "data.synthetic.pretrain_seed"}


def cell_name(seed: int, model_seed: int | None) -> str:
    """``1234`` for a data seed alone, ``1234-m1`` with a model seed (file and folder names)."""
    return str(seed) if model_seed is None else f"{seed}-m{model_seed}"


def spread_summary(sft: dict[tuple[int, int | None], float], what: str = "data") -> list[str]:
    """Lines that summarise SFT greedy accuracies (points) by (data seed, model seed): the spread over data
    seeds for each model seed and, with several model seeds, the range within each data seed (the training's
    noise) next to the range of the data seeds' means (what the corpus adds on average)."""
    if not sft:
        return ["no SFT model finished"]
    data_seeds = list(dict.fromkeys(d for d, _ in sft))
    model_seeds = list(dict.fromkeys(m for _, m in sft))
    lines = []
    for m in model_seeds:
        vals = [sft[(d, m)] for d in data_seeds if (d, m) in sft]
        label = "" if m is None else f" (model seed {m})"
        lines.append(f"SFT greedy{label}: spread {max(vals) - min(vals):.1f} points over {len(vals)} {what} seeds "
                     f"(min {min(vals):.1f}%, max {max(vals):.1f}%)")
    if len(model_seeds) > 1:
        within = {d: [sft[(d, m)] for m in model_seeds if (d, m) in sft] for d in data_seeds}
        within = {d: v for d, v in within.items() if len(v) > 1}
        if within:
            means = {d: sum(v) / len(v) for d, v in within.items()}
            ranges = ", ".join(f"{d}: {max(v) - min(v):.1f}" for d, v in within.items())
            lines.append(f"within a {what} seed (model seeds {', '.join(str(m) for m in model_seeds)}): range {ranges} points")
            lines.append(f"{what} seeds' means: " + ", ".join(f"{d}: {v:.1f}%" for d, v in means.items())
                         + f" (range {max(means.values()) - min(means.values()):.1f} points)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--config", default="conf/ablation-tiny.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234, 1, 2])
    ap.add_argument("--vary", choices=sorted(SEED_KEYS), default="data",
                    help="what the seeds set: data = data.synthetic.seed (every split, and the pretraining corpus "
                         "unless the profile pins data.synthetic.pretrain_seed); pretrain = "
                         "data.synthetic.pretrain_seed (the base's corpus alone; the test problems stay)")
    ap.add_argument("--one-root", action="store_true",
                    help="every seed in one artifacts root (<root>/art), one at a time, so a base that several "
                         "seeds share (a pinned pretraining corpus) is built once")
    ap.add_argument("--model-seeds", type=int, nargs="+", default=None,
                    help="model.tiny.seed values, each trained on every data seed (default: the profile's own)")
    ap.add_argument("--root", type=Path, required=True, help="artifacts roots go to <root>/art-<seed>[-m<model seed>]")
    ap.add_argument("--n", type=int, default=2000, help="test problems scored (the profile's whole test split)")
    ap.add_argument("--k", type=int, default=0, help="samples per problem for the mixed share (0: greedy only)")
    ap.add_argument("--jobs", type=int, default=1, help="seeds trained at once (each at the profile's threads)")
    ap.add_argument("--stages", nargs="+", choices=["base", "sft"], default=["base", "sft"],
                    help="which models to score (sft alone halves the scoring time)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a profile override for every seed, e.g. -o sft.max_steps=600 (repeatable)")
    args = ap.parse_args()
    key = SEED_KEYS[args.vary]
    if args.one_root:
        args.jobs = 1
    args.root.mkdir(parents=True, exist_ok=True)
    cells = [(seed, m) for seed in args.seeds for m in (args.model_seeds or [None])]
    rows, pending, running = [], list(cells), {}
    while pending or running:
        while pending and len(running) < args.jobs:
            cell = pending.pop(0)
            name = cell_name(*cell)
            extra = [*args.override, f"{key}={cell[0]}", *([] if cell[1] is None else [f"model.tiny.seed={cell[1]}"])]
            art = args.root / ("art" if args.one_root else f"art-{name}")
            running[cell] = (chain(args.config, art, args.root / f"run-{name}.log", extra), time.time(), art, extra)
        time.sleep(5)
        for cell, (proc, t0, art, extra) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[cell]
            name = cell_name(*cell)
            if proc.returncode:
                raise SystemExit(f"{name}: the flow failed ({args.root / f'run-{name}.log'})")
            wall = time.time() - t0
            for stage in args.stages:
                q = quality(args.config, model_dir(art, stage, args.config, extra), args.n, args.k,
                            args.root / f"q-{stage}-{name}.log", extra)
                rows.append((cell, stage, f"{wall / 60:.1f}", q))
                print(name, stage, q, flush=True)
    rows.sort(key=lambda r: (cells.index(r[0]), r[1]))
    print(f"\n| {args.vary} seed | model seed | model | base+SFT min ({args.jobs} at once) | n | greedy | mixed@{args.k} | "
          "structural share of errors | errors by known type |\n| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for (seed, m), stage, wall, q in rows:
        print(f"| {seed} | {'profile' if m is None else m} | {stage} | {wall} | {q['n']} | {q['greedy']} | {q['mixed']} | "
              f"{q['structural']} | {q['types']} |")
    sft = {cell: float(q["greedy"].rstrip("%")) for cell, stage, _, q in rows if stage == "sft"}
    print("\n" + "\n".join(spread_summary(sft, args.vary)))


if __name__ == "__main__":
    main()
