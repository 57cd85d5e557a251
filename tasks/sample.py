"""The sample stage: K chain-of-thought samples per pool problem from the SFT model, with logprobs.

``run_sample(cfg, model_dir, data_dir, out)`` reads the model from ``model_dir/model.json`` and the
problems from ``data_dir/pool.jsonl`` (``Problem`` rows, the first ``sample.limit``). Each prompt is
the model's chat template around ``question + "\\n" + sample.instruction``; generation goes through
:func:`tasks.generation.generate` (``sample.engine``, ``k`` samples per problem). It writes
``out/samples/shard-00000.jsonl``, ... of ``sample.shard_size`` problems each, one ``Sample`` per
line, problems in pool order and, within a problem, ``index`` 0..K-1::

    {"problem_id": "synthetic_pool-17", "index": 3, "text": "... \\boxed{18}", "n_tokens": 74,
     "logprob_sum": -21.3, "logprob_mean": -0.288, "finish_reason": "stop"}

Beside the shards it writes ``prompts.jsonl`` (``{"problem_id", "prompt"}``: the exact user turn of every
problem, :func:`training.prompts.user_turn`, which the pairs stage stores as ``Pair.prompt``) and, with
``sample.score_references``, ``references.jsonl``: the model's own log-probability of each problem's
reference solution (:func:`tasks.generation.score_completions`, HF, teacher forcing), in the units of a
sample (``{"problem_id", "n_tokens", "logprob_sum", "logprob_mean"}``), the confidence of a reference that
the pairs stage chooses when no sample is sound.

Resumable: every shard is written atomically (tmp + rename) and the stage runs with
``build_stage(..., resume_dir=True)``, so after a crash the next run keeps the finished shards and
generates only the rest. Each shard has its own seed, ``derive_seed(sample.seed, "shard", i)``,
so a resumed run writes exactly what an uninterrupted run would have. Each shard is one
``generate`` call (one vLLM start): keep ``shard_size`` large where starting the engine is slow.
NaN/inf logprobs are written as they come (null in JSON) and counted in the metrics; the pairs
stage decides what to do with them.

Metrics: ``problems``, ``samples``, ``tokens``, ``tokens_per_s`` and ``seconds`` (generation in this
run, engine starts included), ``shards``, ``shards_resumed``, ``finish_stop``/``finish_length``,
``logprob_mean`` (mean over samples with a finite value), ``nonfinite_logprobs``, ``empty_texts``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasks.generation import Generation, chat_prompt, derive_seed, generate, score_completions
from tasks.records import Problem, Sample, iter_jsonl, write_jsonl
from training.modelref import read_model_ref
from training.prompts import user_turn

VERSION = "2"
SAMPLES_DIR = "samples"
PROMPTS_FILE = "prompts.jsonl"
REFERENCES_FILE = "references.jsonl"
log = logging.getLogger("hnsdpo")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.jsonl"


def shard_seed(seed: int, i: int) -> int:
    return derive_seed(seed, "shard", i)


def shards(problems: Sequence[Problem], shard_size: int) -> list[list[Problem]]:
    """Problems cut into consecutive shards of ``shard_size`` (the last one may be shorter)."""
    return [list(problems[i:i + shard_size]) for i in range(0, len(problems), shard_size)]


def read_pool(path: Path, limit: int | None = None) -> list[Problem]:
    """The first ``limit`` ``Problem`` rows of ``path``; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"pool file not found: {path} (run the data stage first)")
    problems: list[Problem] = []
    for line_no, row in enumerate(iter_jsonl(path), start=1):
        if limit is not None and len(problems) >= limit:
            break
        try:
            problems.append(Problem.model_validate(row))
        except ValidationError as e:
            raise ValueError(f"{path}: line {line_no} is not a valid Problem: {e}") from None
    ids = Counter(p.id for p in problems)
    dup = [i for i, c in ids.items() if c > 1]
    if dup:
        raise ValueError(f"{path}: duplicate problem ids {dup[:5]}")
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def to_samples(problems: Sequence[Problem], gens: Sequence[Sequence[Generation]], k: int) -> list[Sample]:
    """``Sample`` rows for one shard: problem order, then index 0..k-1."""
    if len(gens) != len(problems):
        raise RuntimeError(f"generate returned {len(gens)} results for {len(problems)} prompts")
    rows = []
    for p, outs in zip(problems, gens, strict=True):
        if len(outs) != k:
            raise RuntimeError(f"problem {p.id!r}: {len(outs)} samples, expected {k}")
        rows += [Sample(problem_id=p.id, index=j, text=g.text, n_tokens=g.n_tokens, logprob_sum=g.logprob_sum,
                        logprob_mean=g.logprob_mean, finish_reason=g.finish_reason) for j, g in enumerate(outs)]
    return rows


def shard_is_complete(path: Path, problems: Sequence[Problem], k: int) -> bool:
    """A finished shard from an earlier attempt: every (problem, index) of this shard, nothing else."""
    if not path.is_file():
        return False
    try:
        got = [(d["problem_id"], d["index"]) for d in iter_jsonl(path)]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return got == [(p.id, j) for p in problems for j in range(k)]


def shard_stats(path: Path) -> dict[str, Any]:
    """Counts of one written shard (null logprobs are the non-finite ones)."""
    st: dict[str, Any] = {"samples": 0, "tokens": 0, "finish": Counter(), "lp": [], "nonfinite": 0, "empty": 0}
    for d in iter_jsonl(path):
        st["samples"] += 1
        st["tokens"] += int(d["n_tokens"])
        st["finish"][d["finish_reason"]] += 1
        lp = d.get("logprob_mean")
        if lp is None or not math.isfinite(lp) or d.get("logprob_sum") is None:
            st["nonfinite"] += 1
        else:
            st["lp"].append(float(lp))
        st["empty"] += int(not d["text"].strip())
    return st


def summarise(stats: Sequence[dict[str, Any]], problems: int, new_tokens: int, seconds: float,
              shards_resumed: int) -> dict[str, Any]:
    finish: Counter = sum((s["finish"] for s in stats), Counter())
    lps = [x for s in stats for x in s["lp"]]
    m: dict[str, Any] = {
        "problems": problems, "samples": sum(s["samples"] for s in stats),
        "tokens": sum(s["tokens"] for s in stats), "new_tokens": new_tokens, "seconds": round(seconds, 3),
        "tokens_per_s": round(new_tokens / seconds, 2) if seconds > 0 else None,
        "shards": len(stats), "shards_resumed": shards_resumed,
        "logprob_mean": math.fsum(lps) / len(lps) if lps else None,
        "nonfinite_logprobs": sum(s["nonfinite"] for s in stats), "empty_texts": sum(s["empty"] for s in stats),
    }
    m.update({f"finish_{r}": finish.get(r, 0) for r in sorted({"stop", "length", *finish})})
    return m


def run_sample(cfg, model_dir: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    """Sample ``cfg.sample.k`` solutions per pool problem into ``out/samples``; see the module doc."""
    sc = cfg.sample
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    problems = read_pool(data_dir / "pool.jsonl", sc.limit)
    model = read_model_ref(model_dir)
    from training.models import load_tokenizer

    tokenizer = load_tokenizer(model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)
    folder = out / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.tmp"):  # a write cut short by a crash
        stale.unlink()
    plan = shards(problems, sc.shard_size)
    for extra in set(folder.glob("shard-*.jsonl")) - {folder / shard_name(i) for i in range(len(plan))}:
        extra.unlink()

    write_jsonl(out / PROMPTS_FILE, ({"problem_id": p.id, "prompt": user_turn(p.question, sc.instruction)}
                                     for p in problems))
    stats, resumed, new_tokens, seconds = [], 0, 0, 0.0
    for i, chunk in enumerate(plan):
        path = folder / shard_name(i)
        if shard_is_complete(path, chunk, sc.k):
            resumed += 1
            stats.append(shard_stats(path))
            continue
        prompts = [chat_prompt(tokenizer, p.question, sc.instruction) for p in chunk]
        t0 = time.perf_counter()
        gens = generate(model, prompts, engine=sc.engine, n=sc.k, temperature=sc.temperature, top_p=sc.top_p,
                        top_k=sc.top_k, max_tokens=sc.max_tokens, seed=shard_seed(sc.seed, i),
                        batch_size=sc.batch_size, vllm=sc.vllm, adapter_mode=sc.adapter_mode)
        dt = time.perf_counter() - t0
        write_jsonl(path, to_samples(chunk, gens, sc.k))
        st = shard_stats(path)
        stats.append(st)
        new_tokens += st["tokens"]
        seconds += dt
        log.info("sample: shard %d/%d, %d samples, %d tokens in %.1fs", i + 1, len(plan), st["samples"],
                 st["tokens"], dt)
    metrics = summarise(stats, len(problems), new_tokens, seconds, resumed)
    if sc.score_references:
        metrics.update(score_references(cfg, model, tokenizer, problems, out / REFERENCES_FILE))
    return metrics


def score_references(cfg, model, tokenizer, problems: Sequence[Problem], path: Path) -> dict[str, Any]:
    """Write the model's log-probability of every reference solution to ``path``; returns metrics."""
    refs = [p for p in problems if p.solution and p.solution.strip()]
    if path.is_file() and [d["problem_id"] for d in iter_jsonl(path)] == [p.id for p in refs]:
        rows = list(iter_jsonl(path))  # a resumed run: already scored
    else:
        t0 = time.perf_counter()
        prompts = [chat_prompt(tokenizer, p.question, cfg.sample.instruction) for p in refs]
        gens = score_completions(model, prompts, [p.solution.strip() for p in refs], batch_size=cfg.sample.batch_size,
                                 adapter_mode=cfg.sample.adapter_mode, dtype=cfg.model.dtype)
        rows = [{"problem_id": p.id, "n_tokens": g.n_tokens, "logprob_sum": g.logprob_sum,
                 "logprob_mean": g.logprob_mean} for p, g in zip(refs, gens, strict=True)]
        write_jsonl(path, rows)
        log.info("sample: scored %d reference solutions in %.1fs", len(rows), time.perf_counter() - t0)
    lps = [r["logprob_mean"] for r in rows if r.get("logprob_mean") is not None and math.isfinite(r["logprob_mean"])]
    return {"references_scored": len(rows),
            "reference_logprob_mean": math.fsum(lps) / len(lps) if lps else None}
