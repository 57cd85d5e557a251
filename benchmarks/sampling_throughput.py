"""Sampling throughput: generated tokens/s of vLLM and HF ``generate`` on the same model, prompts and K.

Both engines go through ``tasks.generation.generate`` (what the sample stage runs), one after the
other in one run, on random-weight models built here (no hub needed):

- ``tiny``: the test fixture's shape (hidden 128, 2 layers, head_dim 64, vocab 400);
- ``qwen0.5b``: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, head_dim 64,
  intermediate 4864, vocab 151936, tied embeddings) with a BPE tokenizer padded to the full vocab.

Random weights rarely emit EOS, so nearly every sample runs to ``--max-tokens``: the workload is the
same for both engines. ``wall`` includes the vLLM engine start (subprocess) or the HF model load;
``gen`` excludes it (vLLM: the worker's own timing; HF: a cold load is timed first, then ``generate``,
whose warm reload from the page cache stays in ``gen``)::

    .venv/bin/python benchmarks/sampling_throughput.py --models tiny,qwen0.5b --prompts 8 --k 4 --max-tokens 32

| model | engine | prompts×K | tokens | wall s | start s | gen s | tok/s wall | tok/s gen |
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
    "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
SHAPES = {
    "tiny": dict(vocab=400, hidden=128, layers=2, heads=2, kv_heads=2, head_dim=64, intermediate=256),
    "qwen0.5b": dict(vocab=151936, hidden=896, layers=24, heads=14, kv_heads=2, head_dim=64, intermediate=4864),
    "qwen1.5b": dict(vocab=151936, hidden=1536, layers=28, heads=12, kv_heads=2, head_dim=128,
                     intermediate=8960),
}


def build_tokenizer(vocab: int):
    """A byte-level BPE tokenizer trained on a few sentences, its vocabulary padded to exactly ``vocab``
    entries (extra tokens decode to strings but are never produced by encoding), ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab, 1000), special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((QUESTIONS + [INSTRUCTION]) * 4, trainer)
    if vocab > tok.get_vocab_size():
        data = json.loads(tok.to_str())
        v = data["model"]["vocab"]
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        i = 0
        while len(v) < vocab:
            s = "Ġ" + "".join(alphabet[(i // len(alphabet) ** j) % len(alphabet)] for j in range(3)) + f"{i}"
            if s not in v:
                v[s] = len(v)
            i += 1
        tok = Tokenizer.from_str(json.dumps(data))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.padding_side = "left"
    return fast


def build_model(path: Path, *, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int,
                intermediate: int, save_dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A random Qwen2ForCausalLM of the given shape + tokenizer, saved to ``path`` (reused if there)."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(vocab)
    torch.manual_seed(seed)
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                      max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=eos,
                      pad_token_id=pad, bos_token_id=None)
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, save_dtype))
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


class _Timing(logging.Handler):
    def __init__(self):
        super().__init__()
        self.last: dict | None = None

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("vllm: {"):
            self.last = json.loads(msg[len("vllm: "):])


def run_engine(engine: str, model_dir: Path, prompts: list[str], *, k: int, max_tokens: int, dtype: str,
               temperature: float, seed: int, batch_size: int, vllm_cfg) -> dict:
    from tasks.generation import _load_hf, generate
    from training.modelref import ModelRef

    ref = ModelRef(base=str(model_dir))
    handler = _Timing()
    logging.getLogger("hnsdpo").addHandler(handler)
    logging.getLogger("hnsdpo").setLevel(logging.INFO)
    load = 0.0
    if engine == "hf":  # cold load (imports + weights) timed apart; generate() then reloads from page cache
        t0 = time.perf_counter()
        _load_hf(ref, "lora", dtype)
        load = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        gens = generate(ref, prompts, engine=engine, n=k, temperature=temperature, max_tokens=max_tokens,
                        seed=seed, batch_size=batch_size, vllm=vllm_cfg, dtype=dtype, progress=False)
        wall = time.perf_counter() - t0
    finally:
        logging.getLogger("hnsdpo").removeHandler(handler)
    tokens = sum(g.n_tokens for out in gens for g in out)
    if engine == "vllm" and handler.last:
        start, gen = handler.last["startup_s"], handler.last["generate_s"]
    else:  # hf: wall = cold load + generate (which includes a warm reload)
        start, gen = load, wall
        wall = load + wall
    return {"engine": engine, "n": len(prompts) * k, "tokens": tokens, "wall": wall, "start": start, "gen": gen,
            "stop": sum(g.finish_reason == "stop" for out in gens for g in out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,qwen0.5b", help=f"comma list of {sorted(SHAPES)}")
    ap.add_argument("--engines", default="vllm,hf", help="comma list of vllm,hf (hf only: --engines hf)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=8, help="HF: prompts per generate call")
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM: no torch.compile / CUDA graphs")
    ap.add_argument("--workdir", default=None, help="where the random models are saved (reused); default tmp")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    from conf.schema import VLLMConfig
    from tasks.generation import chat_prompt

    dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    vcfg = VLLMConfig(dtype=dtype, enforce_eager=args.enforce_eager)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hnsdpo-bench-"))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    rows = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        model_dir = build_model(work / name, **SHAPES[name])
        print(f"# {name}: built/loaded in {time.perf_counter() - t0:.1f}s at {model_dir}", flush=True)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        prompts = [chat_prompt(tok, QUESTIONS[i % len(QUESTIONS)] + f" (#{i})", INSTRUCTION)
                   for i in range(args.prompts)]
        for engine in args.engines.split(","):
            r = run_engine(engine, model_dir, prompts, k=args.k, max_tokens=args.max_tokens, dtype=dtype,
                           temperature=args.temperature, seed=0, batch_size=args.batch_size, vllm_cfg=vcfg)
            r["model"] = name
            rows.append(r)
            print(f"# {name}/{engine}: {r['tokens']} tokens, wall {r['wall']:.1f}s", flush=True)
    print(f"\ndevice: {device}; dtype {dtype}; {args.prompts} prompts × K={args.k}, max_tokens {args.max_tokens}, "
          f"temperature {args.temperature}\n")
    print("| model | engine | samples | tokens | stopped | wall s | start/load s | gen s | tok/s wall | tok/s gen |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['engine']} | {r['n']} | {r['tokens']} | {r['stop']} | {r['wall']:.1f} | "
              f"{r['start']:.1f} | {r['gen']:.1f} | {r['tokens'] / r['wall']:.1f} | {r['tokens'] / r['gen']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "dtype": dtype, "args": vars(args), "rows": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
