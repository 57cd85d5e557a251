"""Measure the tiny profile's from-scratch base model on held-out synthetic problems.

Builds the tokenizer + model from ``conf/tiny.yaml`` (or loads one with ``--model``), then reports
greedy accuracy on the first N test problems and, with K samples at temperature T (top_k off), the
share of problems that get both a correct and an incorrect solution ("mixed") — what the DPO pool
needs. Prints a table by step count and the wall/CPU times of every phase.

    .venv/bin/python scripts/tiny_quality.py --save /tmp/tiny-base
    .venv/bin/python scripts/tiny_quality.py --model /tmp/tiny-base -o data.synthetic.n_test=200
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conf import load_config  # noqa: E402
from tasks.corpus.loaders import format_solution  # noqa: E402
from tasks.corpus.synthetic import (  # noqa: E402
    ERROR_KINDS,
    STRUCTURAL_KINDS,
    corpus_seed,
    generate_splits,
    known_error,
    pretrain_documents,
)
from tasks.evaluation.grading import stated_calculations  # noqa: E402
from training.prompts import chat_prompt  # noqa: E402
from training.tiny import build_tiny_model  # noqa: E402

NUM = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"


def final_number(text: str) -> Fraction | None:
    """The answer after the last ``####`` or in the last ``\\boxed{}``, as a number (None if absent)."""
    m = re.findall(r"####\s*\$?\s*(" + NUM + ")", text) or re.findall(r"\\boxed\{\s*(" + NUM + r")\s*\}", text)
    if not m:
        return None
    try:
        return Fraction(m[-1].replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def generate(model, tok, prompts: list[str], *, k: int, temperature: float, max_new_tokens: int,
             batch_size: int) -> list[list[str]]:
    import torch

    out: list[list[str]] = []
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i: i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        kw = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=k)
              if temperature > 0 else dict(do_sample=False, num_return_sequences=1))
        with torch.no_grad():
            seqs = model.generate(**enc, max_new_tokens=max_new_tokens, **kw)
        texts = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        n = k if temperature > 0 else 1
        out.extend(texts[j * n:(j + 1) * n] for j in range(len(texts) // n))
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--config", default="conf/tiny.yaml")
    ap.add_argument("-o", "--override", action="append", default=[])
    ap.add_argument("--model", help="load this model folder instead of building one")
    ap.add_argument("--save", help="where to save the built model (default: a temp folder)")
    ap.add_argument("--n", type=int, default=200, help="test problems")
    ap.add_argument("--k", type=int, default=8, help="samples per problem for the mixed share (0: greedy only)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, help="torch threads (1 is far faster on an oversubscribed CPU)")
    return ap.parse_args()


class Timer:
    """Wall and CPU seconds of named phases, in the order they ran."""

    def __init__(self):
        self.times: dict[str, tuple[float, float]] = {}

    def __call__(self, name, fn):
        t, c = time.time(), time.process_time()
        r = fn()
        self.times[name] = (time.time() - t, time.process_time() - c)
        return r


def model_folder(args, cfg, splits, timed: Timer) -> Path:
    """``--model``, or a from-scratch tiny model built on the pretraining split (saved to ``--save``)."""
    import tempfile

    if args.model:
        return Path(args.model)
    syn = cfg.data.synthetic
    path = Path(args.save or tempfile.mkdtemp(prefix="tiny-base-"))
    pretrain = [format_solution(p, cfg.data.solution_format) for p in splits["pretrain"]]
    docs = pretrain_documents(pretrain, syn.instruction, seed=corpus_seed(syn))
    m = timed("build base", lambda: build_tiny_model(docs, cfg.model.tiny, path, log=print))
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()})
    return path


def tally(test, gold, greedy, sampled) -> dict[str, dict[str, float]]:
    """Counts per subset (``all`` and ``<n> steps``): n, greedy correct, mixed, any correct, sample accuracy,
    unparsed share."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for p, g, gr, ss in zip(test, gold, greedy, sampled, strict=True):
        ok = [final_number(s) == g for s in ss]
        for key in ("all", f"{p.meta['n_steps']} steps"):
            r = rows[key]
            r["n"] += 1
            r["greedy"] += final_number(gr[0]) == g
            if ss:  # --k 0: greedy only
                r["mixed"] += any(ok) and not all(ok)
                r["any"] += any(ok)
                r["sample_acc"] += sum(ok) / len(ok)
                r["unparsed"] += sum(final_number(s) is None for s in ss) / len(ss)
    return rows


def print_error_types(test, greedy) -> None:
    """The greedy errors typed by the generator's known traps (tasks.corpus.synthetic.known_error)."""
    kinds = [known_error(p.meta, p.answer, None if (v := final_number(gr[0])) is None else str(v),
                         stated_calculations(gr[0])) for p, gr in zip(test, greedy, strict=True)]
    errors = [k for k in kinds if k != "correct"]
    if errors:
        share = {k: errors.count(k) / len(errors) for k in ERROR_KINDS if errors.count(k)}
        structural = sum(errors.count(k) for k in STRUCTURAL_KINDS) / len(errors)
        print(f"greedy errors by known type (n={len(errors)}, structural {structural:.1%}): "
              + ", ".join(f"{k} {v:.1%}" for k, v in share.items()))


def print_report(rows, times: dict[str, tuple[float, float]], k: int) -> None:
    print(f"{'subset':<10}{'n':>5}{'greedy':>9}{'mixed@' + str(k):>9}{'any@' + str(k):>8}"
          f"{'sample acc':>12}{'unparsed':>10}")
    for key in ["all"] + sorted(k for k in rows if k != "all"):
        r = rows[key]
        n = r["n"]
        print(f"{key:<10}{int(n):>5}{r['greedy'] / n:>9.1%}{r['mixed'] / n:>9.1%}{r['any'] / n:>8.1%}"
              f"{r['sample_acc'] / n:>12.1%}{r['unparsed'] / n:>10.1%}")
    print(f"\n{'phase':<15}{'wall s':>9}{'cpu s':>9}")
    for name, (w, c) in times.items():
        print(f"{name:<15}{w:>9.1f}{c:>9.1f}")


def main() -> None:
    args = parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.override)
    timed = Timer()
    splits = timed("generate data", lambda: generate_splits(cfg.data.synthetic))
    print(f"torch threads {torch.get_num_threads()}; splits " + ", ".join(f"{k}={len(v)}" for k, v in splits.items()))
    path = model_folder(args, cfg, splits, timed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    test = splits["test"][: args.n]
    prompts = [chat_prompt(tok, p.question, cfg.sample.instruction) for p in test]  # as sampling/evaluation
    gold = [Fraction(p.answer) for p in test]
    greedy = timed("greedy", lambda: generate(model, tok, prompts, k=1, temperature=0, batch_size=args.batch_size,
                                              max_new_tokens=args.max_new_tokens))
    sampled = [[] for _ in prompts] if args.k == 0 else timed(
        "sampled", lambda: generate(model, tok, prompts, k=args.k, temperature=args.temperature,
                                    batch_size=max(1, args.batch_size * 2 // args.k), max_new_tokens=args.max_new_tokens))
    rows = tally(test, gold, greedy, sampled)
    print("\nexample greedy output:\n" + greedy[0][0] + "\n")
    print_error_types(test, greedy)
    print_report(rows, timed.times, args.k)
    print(f"model: {path}")


if __name__ == "__main__":
    main()
