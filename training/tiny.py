"""The from-scratch tiny model: byte-level BPE tokenizer, ChatML template, Qwen2 pretrained on text.

Everything is built offline. The tokenizer splits every digit into its own token (arithmetic is
learnable only then), adds ``<|endoftext|>`` (pad), ``<|im_start|>`` and ``<|im_end|>`` (eos, the
end of a turn), and pads on the left for batched generation. Pretraining text is rendered in the
same chat format that SFT, sampling and evaluation use, one conversation per document::

    <|im_start|>user
    Mia has 12 shells. ... How many shells does Mia have now?
    Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>
    <|im_start|>assistant
    The buckets hold 3*6 = <<3*6=18>>18 shells.
    ...
    #### 15<|im_end|>

All tokens are in the loss, ``<|im_end|>`` included, and ``<|im_end|>`` is the eos of the generation
config, so generation stops at the end of the answer. The result is written with ``save_pretrained``
and loads like any hub model: ``AutoModelForCausalLM.from_pretrained(path)``.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from conf.schema import TinyModelConfig

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
DOC_SEPARATOR = PAD  # separates documents in pretrain.txt

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The ChatML text of ``messages``, identical to ``tokenizer.apply_chat_template(..., tokenize=False)``."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def user_message(question: str, instruction: str | None, sep: str = "\n") -> str:
    """The user turn: the question, then the instruction (when given)."""
    return f"{question}{sep}{instruction}" if instruction else question


def split_documents(text: str) -> list[str]:
    """Documents of a pretrain.txt (separated by ``<|endoftext|>``), empty ones dropped."""
    return [d.strip("\n") + "\n" for d in text.split(DOC_SEPARATOR) if d.strip()]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (single-digit tokens, ChatML)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Specials are whole tokens, never merged: strip them from the training text.
    clean = (t.replace(IM_START, "").replace(IM_END, "").replace(PAD, "") for t in texts)
    tok.train_from_iterator(clean, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, bos_token=None,
                                   unk_token=None, padding_side="left", chat_template=CHATML)
    return fast


def build_model(tokenizer, cfg: TinyModelConfig):
    """A randomly initialised ``Qwen2ForCausalLM`` sized by ``cfg`` (tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if cfg.num_heads * cfg.head_dim < 1:
        raise ValueError("num_heads * head_dim must be positive")
    torch.manual_seed(cfg.seed)
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD)
    qcfg = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
        eos_token_id=eos, pad_token_id=pad, bos_token_id=None, rope_theta=10000.0,
    )
    model = Qwen2ForCausalLM(qcfg)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = None
    return model


ASSISTANT_HEADER = f"{IM_START}assistant\n"


def pack_blocks(tokenizer, documents: Sequence[str], block_size: int, assistant_only: bool = False):
    """Tokenise documents, concatenate them and cut into ``(ids, labels)``, each ``[n_blocks, block_size]``
    (tail dropped).

    ``labels`` is ``ids`` itself (every token in the loss) unless ``assistant_only``: then it is -100
    outside assistant turns (the text of a turn after ``<|im_start|>assistant\n``, its ``<|im_end|>``
    included), so the loss is on the solutions only. A document without an assistant turn is all masked,
    and so is the part of a document cut off at the start of a block: its solution would be learnt
    without its question.
    """
    import torch

    # (text, in the loss, starts a document); without assistant_only each document is one trained piece
    pieces: list[tuple[str, bool, bool]] = []
    for doc in documents:
        if not assistant_only:
            pieces.append((doc, True, True))
            continue
        parts = doc.split(ASSISTANT_HEADER)
        pieces.append((parts[0] + (ASSISTANT_HEADER if len(parts) > 1 else ""), False, True))
        for j, part in enumerate(parts[1:], start=1):
            reply, sep, rest = part.partition(IM_END)
            pieces.append((reply + sep, True, False))
            tail = rest + (ASSISTANT_HEADER if j < len(parts) - 1 else "")
            if tail:
                pieces.append((tail, False, False))
    ids: list[int] = []
    labels: list[int] = []
    doc_starts: list[int] = []
    encs = tokenizer([text for text, _, _ in pieces], add_special_tokens=False)["input_ids"]
    for enc, (_, train, starts_doc) in zip(encs, pieces, strict=True):
        if starts_doc:
            doc_starts.append(len(ids))
        ids.extend(enc)
        labels.extend(enc if train else [-100] * len(enc))
    n = len(ids) // block_size
    if n == 0:
        raise ValueError(f"corpus has {len(ids)} tokens, fewer than one block of {block_size}")
    blocks = torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)
    if not assistant_only:
        return blocks, blocks
    for b0 in range(0, n * block_size, block_size):  # mask each block's head up to its first document start
        d = bisect.bisect_left(doc_starts, b0)
        end = min(doc_starts[d] if d < len(doc_starts) else len(ids), b0 + block_size)
        labels[b0:end] = [-100] * (end - b0)
    return blocks, torch.tensor(labels[: n * block_size], dtype=torch.long).view(n, block_size)


def lr_at(step: int, cfg: TinyModelConfig, min_ratio: float = 0.1) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``min_ratio * cfg.lr`` at ``cfg.max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain(model, blocks, cfg: TinyModelConfig, log: Callable[[dict[str, Any]], None] | None = None,
             log_every: int | None = None, checkpoint: str | Path | None = None,
             save_every: int = 100, labels=None,
             progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on packed ``blocks`` for ``cfg.max_steps`` steps.

    ``labels`` (same shape as ``blocks``, -100 = no loss) selects the tokens in the loss; by default all.
    ``progress(step, loss)`` is called after every optimizer step (steps count from 1; a resumed run
    starts at the checkpoint's step + 1); it only observes, the training is the same with or without it.

    With ``checkpoint``, the model, optimizer and data order are saved there every ``save_every`` steps,
    and a run that finds the file resumes from it (the result equals an uninterrupted run's).

    With ``cfg.ema`` (a decay d), an exponential moving average of the weights starts at the end of
    warm-up (``ema = d * ema + (1 - d) * weights`` after every later step) and replaces the model's
    weights at the end: the averaged model is the one saved.
    """
    import torch

    log_every = log_every or max(1, min(50, cfg.max_steps // 10))
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    order = torch.randperm(len(blocks), generator=gen)
    start, pos, losses = 0, 0, []
    ema: dict[str, Any] | None = None
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, pos, order, losses = state["step"], state["pos"], state["order"], state["losses"]
        ema = state.get("ema")
    model.train()
    t0, c0 = time.time(), time.process_time()
    for step in range(start, cfg.max_steps):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(blocks), generator=gen), 0
        idx = order[pos: pos + cfg.batch_size]
        batch = blocks[idx]
        pos += cfg.batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(input_ids=batch, labels=batch if labels is None else labels[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if cfg.ema is not None and step + 1 >= cfg.warmup_steps:
            ema = _ema_update(ema, model, cfg.ema)
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, losses[-1])
        if ckpt and (step + 1) % save_every == 0 and step + 1 < cfg.max_steps:
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "step": step + 1, "pos": pos, "order": order, "losses": losses, "ema": ema}, tmp)
            tmp.replace(ckpt)
        if log and (step + 1) % log_every == 0:
            log({"step": step + 1, "loss": sum(losses[-log_every:]) / len(losses[-log_every:]),
                 "lr": lr_at(step, cfg), "seconds": round(time.time() - t0, 1)})
    if ema is not None:
        model.load_state_dict(ema, strict=False)
    model.eval()
    tail = losses[-min(len(losses), 20):] or [float("nan")]
    return {"steps": cfg.max_steps, "resumed_from": start, "final_loss": sum(tail) / len(tail),
            "first_loss": losses[0] if losses else float("nan"), "seconds": time.time() - t0,
            "cpu_seconds": time.process_time() - c0, "tokens": cfg.max_steps * cfg.batch_size * blocks.shape[1]}


def _ema_update(ema: dict[str, Any] | None, model, decay: float) -> dict[str, Any]:
    """One step of the weights' moving average (started from the current weights when ``ema`` is None)."""
    import torch

    with torch.no_grad():
        if ema is None:
            return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        for k, v in model.state_dict().items():
            if k in ema:
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
    return ema


def build_tiny_model(documents: Sequence[str], cfg: TinyModelConfig, out: str | Path,
                     log: Callable[[dict[str, Any]], None] | None = None,
                     checkpoint: str | Path | None = None,
                     progress: Callable[[int, float], None] | None = None,
                     snapshot_steps: Collection[int] = (),
                     snapshot: Callable[[int, Any, Any], None] | None = None) -> dict[str, Any]:
    """Train tokenizer and model on ``documents`` and ``save_pretrained`` both into ``out``.

    ``checkpoint``: a file to resume pretraining from (and save to); ``progress``: called after every
    step with (step, loss); see :func:`pretrain`. ``snapshot(step, model, tokenizer)`` is called (in eval
    mode) after each step in ``snapshot_steps``, to keep intermediate models (scripts/build_tiny_base.py);
    it must only read the model, and the training is the same with or without it.

    Returns metrics: params, blocks, steps, first/final loss, seconds (wall) and cpu_seconds.
    """
    import torch

    if not documents:
        raise ValueError("no pretraining documents")
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    tok = train_tokenizer(documents, cfg.vocab_size)
    blocks, labels = pack_blocks(tok, documents, cfg.block_size, assistant_only=cfg.loss_on == "assistant")
    model = build_model(tok, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    if log:
        log({"params": n_params, "blocks": len(blocks), "vocab": len(tok)})
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    wanted = set(snapshot_steps)

    def on_step(step: int, loss: float) -> None:
        if progress is not None:
            progress(step, loss)
        if snapshot is not None and step in wanted:
            model.eval()
            snapshot(step, model, tok)
            model.train()

    try:
        metrics = pretrain(model, blocks, cfg, log=log, checkpoint=checkpoint, labels=labels, progress=on_step)
    finally:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"params": n_params, "vocab": len(tok), "blocks": len(blocks), **metrics,
            "total_seconds": time.time() - t0}
