"""The sample stage: K chain-of-thought samples per pool problem from the SFT model, with logprobs.

Reads ``<model>/model.json`` and ``<data>/pool.jsonl`` (the first ``sample.limit`` problems), writes
``samples/shard-XXXXX.jsonl`` (``Sample`` rows), ``prompts.jsonl`` (the exact user turn of every problem)
and, with ``sample.score_references``, ``references.jsonl`` (the model's log-probability of each reference
solution). Shards, engines, resuming and the metrics: :mod:`tasks.generation.sampling`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.generation import sampling
from tasks.generation.engine import keep_hf_loaded
from training.modelref import read_model_ref

VERSION = "2"


def run(cfg, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs ``model`` (the SFT stage), ``data``."""
    return run_sample(cfg, inputs["model"], inputs["data"], out)


def sample_one_shard(cfg, model_dir: Path, data_dir: Path, out: Path, i: int) -> int:
    """Generate and commit shard ``i`` alone (HF engine, or a one-shard vLLM worker), exactly as
    :func:`run_sample` would: the unit a distributed task runner maps over (``flows.sample_scaleout``).
    Returns its token count (0 when it was already complete)."""
    sc = cfg.sample
    problems = sampling.read_pool(Path(data_dir) / "pool.jsonl", sc.limit)
    plan = sampling.shards(problems, sc.shard_size)
    folder = Path(out) / sampling.SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if sampling.shard_is_complete(folder / sampling.shard_name(i), plan[i], sc.k):
        return 0
    single = cfg.model_copy(update={"sample": sc.model_copy(update={"score_references": False})})
    return int(run_sample(single, model_dir, data_dir, out, only=[i])["new_tokens"])


def run_sample(cfg, model_dir: Path, data_dir: Path, out: Path,
               map_shards: Callable[[list[int]], None] | None = None,
               only: list[int] | None = None) -> dict[str, Any]:
    """Sample ``cfg.sample.k`` solutions per pool problem into ``out/samples``; see the module doc.

    ``map_shards(todo)`` (optional) generates the missing shards elsewhere, e.g. as Prefect tasks on a
    Dask cluster each running :func:`sample_one_shard`; this function then only checks and summarises.
    ``only`` = these shards alone (other workers may be writing the others)."""
    sc = cfg.sample
    out = Path(out)
    problems = sampling.read_pool(Path(data_dir) / "pool.jsonl", sc.limit)
    model = read_model_ref(Path(model_dir))
    from training.models import load_tokenizer  # torch: imported when the stage runs

    tokenizer = load_tokenizer(model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)
    folder = out / sampling.SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    plan = sampling.shards(problems, sc.shard_size)
    if only is None:
        sampling.clear_leftovers(folder, len(plan))
    choice = sampling.choose_engine(cfg, model)
    if only is None:
        sampling.check_engine(folder, choice.engine)
        sampling.write_prompts(out / sampling.PROMPTS_FILE, problems, sc.instruction)
    run = sampling.generate_shards(cfg, model, tokenizer, problems, plan, folder, out, choice, only, map_shards)
    if only is not None:
        return {"new_tokens": run.new_tokens, "seconds": run.seconds}
    metrics = sampling.stage_metrics(run, len(plan), len(problems), choice)
    if sc.score_references:
        refs = run.refs
        if refs is None:
            with keep_hf_loaded():
                refs = sampling.score_references(cfg, model, tokenizer, problems, out / sampling.REFERENCES_FILE)
        metrics.update(refs)
    (out / sampling.ENGINE_FILE).unlink(missing_ok=True)
    return metrics
