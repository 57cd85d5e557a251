"""Sampling shards, the sample stage's library (``tasks/sample.py`` runs it): K chain-of-thought samples per pool problem from the SFT model, with logprobs.

The stage (``tasks.sample.run_sample(cfg, model_dir, data_dir, out)``) reads the model from ``model_dir/model.json`` and the
problems from ``data_dir/pool.jsonl`` (``Problem`` rows, the first ``sample.limit``). Each prompt is
the model's chat template around ``question + "\\n" + sample.instruction``; generation goes through
:func:`tasks.generation.engine.generate` (``sample.engine``, ``k`` samples per problem). It writes
``out/samples/shard-00000.jsonl``, ... of ``sample.shard_size`` problems each, one ``Sample`` per
line, problems in pool order and, within a problem, ``index`` 0..K-1::

    {"problem_id": "synthetic_pool-17", "index": 3, "text": "... \\boxed{18}", "n_tokens": 74,
     "logprob_sum": -21.3, "logprob_mean": -0.288, "finish_reason": "stop"}

Beside the shards it writes ``prompts.jsonl`` (``{"problem_id", "prompt"}``: the exact user turn of every
problem, :func:`training.prompts.user_turn`, which the pairs stage stores as ``Pair.prompt``) and, with
``sample.score_references``, ``references.jsonl``: the model's own log-probability of each problem's
reference solution (:func:`tasks.generation.engine.score_completions`, HF, teacher forcing), in the units of a
sample (``{"problem_id", "n_tokens", "logprob_sum", "logprob_mean"}``), the confidence of a reference that
the pairs stage chooses when no sample is sound.

One engine per stage: with vLLM a single worker process (:func:`tasks.generation.engine.generate_shards_vllm`)
serves every shard; with HF the model is loaded once (:func:`tasks.generation.engine.keep_hf_loaded`) for the
shards and the reference scoring. ``sample.engine: auto`` (the default) takes vLLM where the vLLM
environment works (:func:`tasks.generation.engine.resolve_engine`) and HF generate otherwise; the log and the
metrics (``engine``, ``engine_reason``) say which.

Resumable, at the chunk: each chunk (``sample.vllm.chunk_size`` prompts, or ``batch_size`` for HF) is
appended to ``samples/shard-XXXXX.partial`` (flushed and fsynced) as soon as it is generated, and a shard
is committed (``shard-XXXXX.jsonl``, tmp + rename) the moment its last chunk is in. The stage runs with
``build_stage(..., resume_dir=True)``, so after a crash the next run keeps the finished shards, resumes
at the first missing one and generates only its missing prompts. Each shard has its own seed,
``derive_seed(sample.seed, "shard", i)``, and each prompt its own sampling seed under vLLM
(``VLLMConfig.per_request_seed``; HF seeds each batch by its position), so a resumed run writes exactly
what an uninterrupted run would have. NaN/inf logprobs are written as they come (null in JSON) and
counted in the metrics; the pairs stage decides what to do with them.

``sample.base_precision`` picks the base a (Q)LoRA adapter is sampled on: ``full`` (the default: the base
in ``model.dtype``, what vLLM serves and what the DPO stage merges the adapter into) or ``train`` (the
4-bit NF4 base QLoRA trained the adapter on; HF engine, or vLLM's bitsandbytes on CUDA).

Metrics: ``problems``, ``samples``, ``tokens``, ``tokens_per_s`` and ``seconds`` (generation in this
run, engine start included), ``engine``/``engine_vllm``/``engine_reason``, ``base_quantization``, with vLLM
``engine_start_s``, ``generate_s`` and ``tokens_per_s_after_start``, ``shards``, ``shards_resumed``, ``finish_stop``/``finish_length``,
``logprob_mean`` (mean over samples with a finite value), ``nonfinite_logprobs``, ``empty_texts``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conf.schema import VLLMConfig
from tasks.common.progress import run_log as log
from tasks.common.records import Problem, Sample, iter_jsonl, read_records, write_jsonl
from tasks.generation.engine import (
    Generation,
    ShardJob,
    _on_cuda,
    chat_prompt,
    derive_seed,
    generate,
    generate_shards_vllm,
    keep_hf_loaded,
    read_part,
    resolve_engine,
    score_completions,
    write_part_lines,
)
from training.prompts import user_turn

SAMPLES_DIR = "samples"
PROMPTS_FILE = "prompts.jsonl"
REFERENCES_FILE = "references.jsonl"


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
    problems = read_records(path, Problem, limit=limit)
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


def base_quantization(cfg, model) -> str:
    """``"4bit"`` when the adapter is to be sampled on the 4-bit base it was trained on
    (``sample.base_precision: train`` under QLoRA, adapter_mode lora), else ``"none"``."""
    sc = cfg.sample
    if sc.base_precision != "train" or cfg.model.quantization != "4bit" or not model.adapter:
        return "none"
    if sc.adapter_mode != "lora":
        raise ValueError("sample.base_precision=train keeps the adapter apart from the 4-bit base: "
                         "use sample.adapter_mode=lora")
    return "4bit"


def part_name(i: int) -> str:
    """The in-progress file of shard ``i`` (finished chunks; no ``.jsonl`` suffix, so no reader takes it
    for a shard)."""
    return f"shard-{i:05d}.partial"


ENGINE_FILE = ".sample-engine.json"


def check_engine(folder: Path, engine: str) -> None:
    """Shards of an earlier attempt are kept only when it used the same engine (``engine: auto`` may
    resolve differently on another machine, and the engines do not sample alike)."""
    marker = folder.parent / ENGINE_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("engine") != engine:
        log.warning("sample: the earlier attempt used another engine; starting the shards again with %s", engine)
        for f in [*folder.glob("shard-*.jsonl"), *folder.glob("shard-*.partial")]:
            f.unlink()
    marker.write_text(json.dumps({"engine": engine}))


class ShardProgress:
    """Per-shard and total progress in the log (every shard, and at most every 30 s within a shard)."""

    def __init__(self, n_shards: int, n_problems: int, done_problems: int):
        self.n_shards, self.n_problems, self.done = n_shards, n_problems, done_problems
        self.t0 = self.last = time.perf_counter()

    def within(self, i: int, size: int, got: int) -> None:
        now = time.perf_counter()
        if now - self.last >= 30:
            self.last = now
            log.info("sample: shard %d/%d at %d/%d problems; total %d/%d problems, %.0fs", i + 1, self.n_shards,
                     got, size, self.done + got, self.n_problems, now - self.t0)

    def shard(self, i: int, size: int, st: dict[str, Any], dt: float | None) -> None:
        self.done += size
        self.last = time.perf_counter()
        log.info("sample: shard %d/%d done, %d samples, %d tokens%s; total %d/%d problems (%.0f%%), %.0fs",
                 i + 1, self.n_shards, st["samples"], st["tokens"], f" in {dt:.1f}s" if dt is not None else "",
                 self.done, self.n_problems, 100 * self.done / max(1, self.n_problems), self.last - self.t0)


def score_references(cfg, model, tokenizer, problems: Sequence[Problem], path: Path) -> dict[str, Any]:
    """Write the model's log-probability of every reference solution to ``path``; returns metrics."""
    refs = [p for p in problems if p.solution and p.solution.strip()]
    if path.is_file() and [d["problem_id"] for d in iter_jsonl(path)] == [p.id for p in refs]:
        rows = list(iter_jsonl(path))  # a resumed run: already scored
    else:
        t0 = time.perf_counter()
        prompts = [chat_prompt(tokenizer, p.question, cfg.sample.instruction) for p in refs]
        gens = score_completions(model, prompts, [p.solution.strip() for p in refs], batch_size=cfg.sample.batch_size,
                                 adapter_mode=cfg.sample.adapter_mode, dtype=cfg.model.dtype,
                                 base_quantization=base_quantization(cfg, model))
        rows = [{"problem_id": p.id, "n_tokens": g.n_tokens, "logprob_sum": g.logprob_sum,
                 "logprob_mean": g.logprob_mean} for p, g in zip(refs, gens, strict=True)]
        write_jsonl(path, rows)
        log.info("sample: scored %d reference solutions in %.1fs", len(rows), time.perf_counter() - t0)
    lps = [r["logprob_mean"] for r in rows if r.get("logprob_mean") is not None and math.isfinite(r["logprob_mean"])]
    return {"references_scored": len(rows),
            "reference_logprob_mean": math.fsum(lps) / len(lps) if lps else None}


def clear_leftovers(folder: Path, n_shards: int) -> None:
    """Remove writes cut short by a crash (``*.tmp``) and shard files outside the current plan."""
    for stale in folder.glob("*.tmp"):
        stale.unlink()
    keep = {folder / shard_name(i) for i in range(n_shards)} | {folder / part_name(i) for i in range(n_shards)}
    for extra in {*folder.glob("shard-*.jsonl"), *folder.glob("shard-*.partial")} - keep:
        extra.unlink()


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "vllm" | "hf"
    why: str
    vllm: VLLMConfig
    base_quantization: str  # "none" | "4bit"


def choose_engine(cfg, model) -> EngineChoice:
    """The engine (``sample.engine``, resolved) and the base precision the adapter is sampled on."""
    sc = cfg.sample
    base_q = base_quantization(cfg, model)
    engine, why = resolve_engine(sc.engine, sc.vllm)
    vllm_cfg = sc.vllm
    if base_q == "4bit" and engine == "vllm":
        if not _on_cuda():
            if sc.engine == "vllm":
                raise ValueError("sample.base_precision=train with a 4-bit model needs vLLM's bitsandbytes "
                                 "support, which is CUDA only: use sample.engine=hf/auto or base_precision=full")
            engine, why = "hf", "auto: HF generate, because base_precision=train (4-bit base) needs CUDA for vLLM"
        else:
            vllm_cfg = vllm_cfg.model_copy(update={"engine_kwargs": {"quantization": "bitsandbytes",
                                                                     **vllm_cfg.engine_kwargs}})
    log.info("sample: engine %s (%s); adapter on the %s base", engine, why,
             "4-bit (as trained)" if base_q == "4bit" else "full-precision")
    return EngineChoice(engine, why, vllm_cfg, base_q)


def scan_shards(folder: Path, plan: Sequence[Sequence[Problem]], k: int, only: Sequence[int] | None
                ) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """(stats of the complete shards, indices still to generate); ``only`` limits both to those shards."""
    stats: dict[int, dict[str, Any]] = {}
    todo = []
    for i, chunk in enumerate(plan):
        if only is not None and i not in only:
            continue
        path = folder / shard_name(i)
        if shard_is_complete(path, chunk, k):
            stats[i] = shard_stats(path)
            (folder / part_name(i)).unlink(missing_ok=True)
        else:
            todo.append(i)
    return stats, todo


def collect_mapped(map_shards: Callable[[list[int]], None], todo: Sequence[int], folder: Path,
                   plan: Sequence[Sequence[Problem]], k: int, stats: dict[int, dict[str, Any]]) -> list[int]:
    """Hand ``todo`` to a task runner (``map_shards``), check that every shard was written; returns them."""
    log.info("sample: %d shards handed to the task runner", len(todo))
    map_shards(list(todo))
    for i in todo:
        if not shard_is_complete(folder / shard_name(i), plan[i], k):
            raise RuntimeError(f"sample: shard {i} was not written by the task runner")
        stats[i] = shard_stats(folder / shard_name(i))
    return list(todo)


def _shard_prompts(tokenizer, problems: Sequence[Problem], instruction: str) -> list[str]:
    return [chat_prompt(tokenizer, p.question, instruction) for p in problems]


def vllm_shards(cfg, model, tokenizer, plan, todo: Sequence[int], folder: Path, out: Path, vllm_cfg: VLLMConfig,
                commit: Callable[[int, list, float | None], None], progress: ShardProgress) -> dict[str, Any]:
    """Every shard of ``todo`` through one vLLM worker (shards committed as they finish); its timing."""
    sc = cfg.sample
    jobs = []
    for i in todo:
        part = folder / part_name(i)
        prompts = _shard_prompts(tokenizer, plan[i], sc.instruction)
        jobs.append(ShardJob(key=shard_name(i), prompts=prompts, seed=shard_seed(sc.seed, i), part=part,
                             done=set(read_part(part, len(prompts)))))
    index = {job.key: i for job, i in zip(jobs, todo, strict=True)}
    return generate_shards_vllm(
        model, jobs, vllm=vllm_cfg, seed=sc.seed, **generation_kwargs(sc), workdir=out,
        on_shard=lambda job, gens: commit(index[job.key], gens, None),
        on_progress=lambda job, got: progress.within(index[job.key], len(job.prompts), got))


def generation_kwargs(sc) -> dict[str, Any]:
    return dict(n=sc.k, temperature=sc.temperature, top_p=sc.top_p, top_k=sc.top_k, max_tokens=sc.max_tokens,
                adapter_mode=sc.adapter_mode)


def hf_shard(cfg, model, tokenizer, problems: Sequence[Problem], i: int, folder: Path, base_q: str
             ) -> list[list[Generation]]:
    """Shard ``i`` with HF generate, resuming after the last whole batch of its part file."""
    sc = cfg.sample
    part = folder / part_name(i)
    prompts = _shard_prompts(tokenizer, problems, sc.instruction)
    got = read_part(part, len(prompts))
    offset = 0  # resume after the last whole batch of the part file
    while offset + sc.batch_size <= len(prompts) and all(j in got for j in range(offset, offset + sc.batch_size)):
        offset += sc.batch_size
    if offset < len(got):
        part.write_text("")
        write_part_lines(part, 0, [got[j] for j in range(offset)])
    gens = generate(model, prompts, engine="hf", seed=shard_seed(sc.seed, i), batch_size=sc.batch_size,
                    dtype=cfg.model.dtype, offset=offset, base_quantization=base_q,
                    on_batch=lambda start, g: write_part_lines(part, start, g), **generation_kwargs(sc))
    return [got[j] for j in range(offset)] + gens


def stage_metrics(run: ShardRun, n_shards: int, n_problems: int, choice: EngineChoice) -> dict[str, Any]:
    """The sample stage's metrics (the module doc lists them)."""
    timing, new_tokens = run.timing, run.new_tokens
    metrics = summarise([run.stats[i] for i in range(n_shards)], n_problems, new_tokens, run.seconds, run.resumed)
    if run.by_runner:
        metrics["shards_by_task_runner"] = run.by_runner
    metrics.update(engine=choice.engine, engine_vllm=int(choice.engine == "vllm"), engine_reason=choice.why,
                   base_quantization=choice.base_quantization)
    if timing:
        metrics["engine_start_s"] = timing.get("startup_s")
        gen_s = timing.get("generate_s")
        metrics["generate_s"] = gen_s
        metrics["tokens_per_s_after_start"] = round(new_tokens / gen_s, 2) if gen_s else None
    return metrics


@dataclass
class ShardRun:
    """What :func:`generate_shards` did: per-shard stats, tokens and seconds of this run, the shards a task
    runner wrote, the shards found complete, the vLLM timing and (HF) the reference scores."""

    stats: dict[int, dict[str, Any]]
    new_tokens: int
    seconds: float
    by_runner: int
    resumed: int
    timing: dict[str, Any]
    refs: dict[str, Any] | None


def generate_shards(cfg, model, tokenizer, problems: Sequence[Problem], plan: Sequence[Sequence[Problem]],
                    folder: Path, out: Path, choice: EngineChoice, only: Sequence[int] | None = None,
                    map_shards: Callable[[list[int]], None] | None = None) -> ShardRun:
    """Write every missing shard of ``plan`` (or of ``only``): by ``map_shards``, one vLLM worker, or HF
    generate with the model loaded once (which then also scores the references)."""
    sc = cfg.sample
    stats, todo = scan_shards(folder, plan, sc.k, only)
    resumed = len(stats)
    progress = ShardProgress(len(plan), len(problems), sum(len(plan[i]) for i in stats))
    if resumed:
        log.info("sample: %d of %d shards already written; resuming at shard %d", resumed, len(plan),
                 todo[0] + 1 if todo else len(plan))
    t_stage = time.perf_counter()
    by_runner: list[int] = []
    if map_shards is not None and todo:
        by_runner, todo = collect_mapped(map_shards, todo, folder, plan, sc.k, stats), []

    def commit(i: int, gens: list, dt: float | None) -> None:
        write_jsonl(folder / shard_name(i), to_samples(plan[i], gens, sc.k))  # atomic (tmp + rename)
        (folder / part_name(i)).unlink(missing_ok=True)
        stats[i] = shard_stats(folder / shard_name(i))
        progress.shard(i, len(plan[i]), stats[i], dt)

    timing: dict[str, Any] = {}
    refs = None
    if todo and choice.engine == "vllm":
        timing = vllm_shards(cfg, model, tokenizer, plan, todo, folder, out, choice.vllm, commit, progress)
    elif todo:
        with keep_hf_loaded():
            for i in todo:
                t0 = time.perf_counter()
                gens = hf_shard(cfg, model, tokenizer, plan[i], i, folder, choice.base_quantization)
                commit(i, gens, time.perf_counter() - t0)
            if sc.score_references:
                refs = score_references(cfg, model, tokenizer, problems, out / REFERENCES_FILE)
    seconds = time.perf_counter() - t_stage
    new_tokens = sum(stats[i]["tokens"] for i in [*todo, *by_runner] if i in stats)
    return ShardRun(stats, new_tokens, seconds, len(by_runner), resumed, timing, refs)


def write_prompts(path: Path, problems: Sequence[Problem], instruction: str) -> None:
    """``prompts.jsonl``: the exact user turn of every problem (what the pairs stage stores as ``Pair.prompt``)."""
    write_jsonl(path, ({"problem_id": p.id, "prompt": user_turn(p.question, instruction)} for p in problems))
