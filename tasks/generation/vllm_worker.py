"""vLLM generation worker, run inside the vLLM environment by :func:`tasks.generation.engine.generate`::

    .venv-vllm/bin/python -m tasks.generation.vllm_worker request.json out.jsonl

Imports only the standard library and vLLM (the vLLM environment does not have this project's
dependencies). ``request.json`` (written by ``tasks.generation.engine.vllm_request``)::

    {"model": "/abs/base", "tokenizer": "/abs/base", "lora": "/abs/adapter" | null,
     "engine": {"dtype": "auto", "seed": 0, "enable_lora": true, "max_lora_rank": 64, ...},
     "sampling": {"n": 8, "temperature": 0.7, "top_p": 1.0, "top_k": -1, "max_tokens": 512},
     "seeds": [123, 456] | null, "chunk_size": 512, "prompts": ["<|im_start|>user\\n...", ...]}

``--jobs request.json status.jsonl`` (the sample stage, :func:`tasks.generation.engine.generate_shards_vllm`)
starts the engine once for a list of shards; see :func:`run_jobs`.

``out.jsonl`` gets one line per prompt, written chunk by chunk (the caller counts lines for progress)::

    {"i": 0, "outputs": [{"text": "...", "n_tokens": 74, "logprob_sum": -21.3, "finish_reason": "stop"}]}

Prompts are tokenised without special tokens (the chat template has them), as the HF engine does.
``logprob_sum`` sums the raw (pre-temperature) log-probabilities of the sampled tokens
(``logprobs=0`` returns just the sampled token's; ``logprobs_mode`` is left at its raw default).
``n_tokens`` counts the generated tokens including the EOS token that stopped the sequence.
The last stderr line is ``[vllm_worker] timing {"startup_s": 21.0, "generate_s": 3.2, "prompts": 4,
"tokens": 64}`` (engine start vs generation), which the caller logs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

TIMING_TAG = "[vllm_worker] timing"


def _engine_kwargs(req: dict) -> dict:
    e = dict(req.get("engine") or {})
    kw = {"model": req["model"], "tokenizer": req.get("tokenizer") or req["model"]}
    for key in ("dtype", "seed", "gpu_memory_utilization", "tensor_parallel_size", "enforce_eager",
                "max_model_len"):
        if e.get(key) is not None:
            kw[key] = e.pop(key)
        else:
            e.pop(key, None)
    enable_lora = bool(e.pop("enable_lora", False))
    max_lora_rank = e.pop("max_lora_rank", None)
    if enable_lora:
        kw["enable_lora"] = True
        if max_lora_rank:
            kw["max_lora_rank"] = int(max_lora_rank)
    kw.update(e)  # engine_kwargs from the config
    return kw


def _sampled_logprob_sum(completion) -> float:
    if completion.logprobs is None:
        return float(completion.cumulative_logprob if completion.cumulative_logprob is not None else math.nan)
    total = []
    for tok, entry in zip(completion.token_ids, completion.logprobs, strict=False):
        lp = entry.get(tok) if hasattr(entry, "get") else None
        total.append(lp.logprob if lp is not None else math.nan)
    return math.fsum(total) if all(math.isfinite(x) for x in total) else sum(total)


def completion_record(completion, tokenizer) -> dict:
    """One output as a JSON-able dict. The text is decoded here from the token ids (without the
    stopping EOS/stop token, skipping special tokens), exactly as the HF engine decodes, rather than
    taken from vLLM's incremental detokenizer, which holds back a trailing incomplete UTF-8 sequence."""
    ids = list(completion.token_ids)
    finish = "length" if completion.finish_reason == "length" else "stop"
    stopped_on_token = finish == "stop" and not isinstance(completion.stop_reason, str)
    body = ids[:-1] if stopped_on_token and ids else ids
    return {"text": tokenizer.decode(body, skip_special_tokens=True), "n_tokens": len(ids),
            "logprob_sum": _sampled_logprob_sum(completion), "finish_reason": finish}


def run_jobs(req: dict, status_path: str) -> int:
    """``--jobs`` mode: one engine for every shard of the request (``req["jobs"]``: ``{"key", "part",
    "indices", "prompts", "seeds"}``). Each chunk is appended to the job's part file as ``{"i": index,
    "outputs": [...]}`` lines, flushed and fsynced; when a job is complete ``{"done": key}`` is appended
    to ``status_path``. A crash loses at most the chunk in flight."""
    t0 = time.time()
    from vllm import LLM

    llm = LLM(**_engine_kwargs(req))
    t_ready = time.time()
    print(f"[vllm_worker] engine ready in {t_ready - t0:.1f}s", file=sys.stderr, flush=True)
    lora, tokenizer, params = _setup(req, llm)
    chunk = max(1, int(req.get("chunk_size") or 512))
    n_tok = n_prompts = 0
    with open(status_path, "a", encoding="utf-8") as status:
        status.write(json.dumps({"ready": round(t_ready - t0, 3)}) + "\n")
        status.flush()
        for job in req["jobs"]:
            prompts, indices, seeds = job["prompts"], job["indices"], job.get("seeds")
            with open(job["part"], "a", encoding="utf-8") as out:
                for start in range(0, len(prompts), chunk):
                    idx = range(start, min(start + chunk, len(prompts)))
                    inputs = [{"prompt_token_ids": tokenizer.encode(prompts[i], add_special_tokens=False)}
                              for i in idx]
                    sp = [params(seeds[i]) for i in idx] if seeds else params(None)
                    results = llm.generate(inputs, sp, lora_request=lora, use_tqdm=False)
                    lines = []
                    for i, res in zip(idx, results, strict=True):
                        recs = [completion_record(c, tokenizer) for c in sorted(res.outputs, key=lambda c: c.index)]
                        n_tok += sum(r["n_tokens"] for r in recs)
                        lines.append(json.dumps({"i": indices[i], "outputs": recs}) + "\n")
                    out.write("".join(lines))
                    out.flush()
                    os.fsync(out.fileno())
                    n_prompts += len(idx)
            status.write(json.dumps({"done": job["key"]}) + "\n")
            status.flush()
    timing = {"startup_s": round(t_ready - t0, 3), "generate_s": round(time.time() - t_ready, 3),
              "prompts": n_prompts, "tokens": n_tok, "shards": len(req["jobs"])}
    print(f"{TIMING_TAG} {json.dumps(timing)}", file=sys.stderr, flush=True)
    return 0


def _setup(req: dict, llm):
    """(LoRARequest or None, tokenizer, seed -> SamplingParams) for a request."""
    from vllm import SamplingParams

    lora = None
    if req.get("lora"):
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, req["lora"])
    s = req["sampling"]
    greedy = float(s["temperature"]) == 0.0

    def params(seed):
        return SamplingParams(n=int(s["n"]), temperature=float(s["temperature"]),
                              top_p=1.0 if greedy else float(s["top_p"]),
                              top_k=-1 if greedy else int(s["top_k"]), max_tokens=int(s["max_tokens"]),
                              logprobs=0, seed=None if greedy else seed)

    return lora, llm.get_tokenizer(), params


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--jobs":
        with open(argv[1], encoding="utf-8") as f:
            return run_jobs(json.load(f), argv[2])
    if len(argv) != 2:
        print("usage: python -m tasks.generation.vllm_worker request.json out.jsonl\n"
              "       python -m tasks.generation.vllm_worker --jobs request.json status.jsonl", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        req = json.load(f)
    t0 = time.time()
    from vllm import LLM

    llm = LLM(**_engine_kwargs(req))
    t_ready = time.time()
    print(f"[vllm_worker] engine ready in {t_ready - t0:.1f}s", file=sys.stderr, flush=True)
    lora, tokenizer, params = _setup(req, llm)

    prompts = req["prompts"]
    seeds = req.get("seeds")
    chunk = max(1, int(req.get("chunk_size") or len(prompts) or 1))
    n_tok = 0
    with open(argv[1], "w", encoding="utf-8") as out:
        for start in range(0, len(prompts), chunk):
            idx = range(start, min(start + chunk, len(prompts)))
            inputs = [{"prompt_token_ids": tokenizer.encode(prompts[i], add_special_tokens=False)} for i in idx]
            sp = [params(seeds[i]) for i in idx] if seeds else params(None)
            results = llm.generate(inputs, sp, lora_request=lora, use_tqdm=False)
            for i, res in zip(idx, results, strict=True):
                recs = [completion_record(c, tokenizer) for c in sorted(res.outputs, key=lambda c: c.index)]
                n_tok += sum(r["n_tokens"] for r in recs)
                out.write(json.dumps({"i": i, "outputs": recs}) + "\n")
            out.flush()
    timing = {"startup_s": round(t_ready - t0, 3), "generate_s": round(time.time() - t_ready, 3),
              "prompts": len(prompts), "tokens": n_tok}
    print(f"{TIMING_TAG} {json.dumps(timing)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    rc = main(sys.argv[1:])
    # The output file is closed and complete. Skip the interpreter's teardown: vLLM's engine shutdown
    # at exit takes ~10 s on a busy CPU and adds nothing here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
