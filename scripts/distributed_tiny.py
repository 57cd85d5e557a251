"""Multi-process training in miniature, on CPU (gloo), with ``accelerate launch``::

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        scripts/distributed_tiny.py grad  OUT.pt      # weighted DPO gradient of one global batch
    accelerate launch --multi_gpu --num_processes 2 ... scripts/distributed_tiny.py train OUT_DIR   # SFT, then DPO

(``--multi_gpu`` only selects accelerate's torch-distributed launcher, which starts the 2 processes;
``accelerate launch --cpu`` would start one. The script sets ``ACCELERATE_USE_CPU=true``, so with no GPU
accelerate and the HF Trainer run MULTI_CPU over gloo.)

``grad``: the tiny model, a fixed global batch of 4 preference pairs with unequal weights, each process
taking its contiguous share (2 pairs on 2 processes, 4 on 1). The loss is what ``training.dpo`` computes
per micro-batch, ``mean(w·ℓ)`` (:func:`training.dpo.weighted_mean` of
:func:`training.dpo.sigmoid_dpo_losses`); DDP averages the gradients over the processes. Rank 0 saves
the LoRA-free full-parameter gradient. Because the pairs stage normalises the weights to mean 1 over the
*run* (not per batch), the per-micro-batch mean of w·ℓ averaged over P equal micro-batches is the mean
over the global batch: the gradient does not depend on the split (tests/training/test_distributed.py).

``train``: builds the tiny model (rank 0; the others wait), trains the SFT LoRA with
:func:`training.sft.train_sft` and a weighted DPO LoRA with :func:`training.dpo.train_dpo` on it, each
through the HF Trainer, which picks up the distributed state accelerate set up. Rank 0 writes
``OUT_DIR/result.json`` (world size, steps, losses). With more than one process DPO runs with
``precompute_ref_log_probs=False``: TRL 1.16 writes the precomputed reference log-probs of an in-memory
dataset (``Dataset.from_list`` in ``train_dpo``) to a per-process temporary cache, and the other ranks fail
with ``FileNotFoundError`` on it. ``train_dpo`` would need to save the dataset to a shared folder first.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEIGHTS = [0.5, 1.5, 2.0, 0.25]
PAIRS = [(f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is $\\boxed{{{a + b}}}$.",
          f"{a} + {b} = {a + b + 1}. The answer is $\\boxed{{{a + b + 1}}}$.") for a, b in
         [(2, 3), (4, 4), (7, 1), (5, 6)]]


def _seq_logps(model, tok, prompts, completions):
    import torch

    seqs, spans = [], []
    for p, c in zip(prompts, completions, strict=True):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        seqs.append(p_ids + c_ids)
        spans.append((len(p_ids), len(c_ids)))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id or 0)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    return torch.stack([logp[i, n - 1:n - 1 + m].sum() for i, (n, m) in enumerate(spans)])


def grad(out: Path) -> None:
    import torch
    from accelerate import Accelerator

    from tests.conftest import build_test_model
    from training.dpo import sigmoid_dpo_losses, weighted_mean
    from training.models import load_model, load_tokenizer
    from training.prompts import chat_prompt

    acc = Accelerator(cpu=True)
    model_dir = out.parent / "tiny-model"
    if acc.is_main_process:
        build_test_model(model_dir)
    acc.wait_for_everyone()
    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype="float32")
    model.train()
    model = acc.prepare(model)
    share = len(PAIRS) // acc.num_processes
    lo = acc.process_index * share
    mine, w = PAIRS[lo:lo + share], torch.tensor(WEIGHTS[lo:lo + share])
    prompts = [chat_prompt(tok, q, "Box it.") for q, _, _ in mine]
    with torch.no_grad():
        ref_c = _seq_logps(model, tok, prompts, [c for _, c, _ in mine]) - 1.0  # a reference unlike the policy
        ref_r = _seq_logps(model, tok, prompts, [r for _, _, r in mine]) + 0.5
    pol_c = _seq_logps(model, tok, prompts, [c for _, c, _ in mine])
    pol_r = _seq_logps(model, tok, prompts, [r for _, _, r in mine])
    loss = weighted_mean(sigmoid_dpo_losses(pol_c, pol_r, ref_c, ref_r, beta=0.1), w)
    acc.backward(loss)
    if acc.is_main_process:
        inner = acc.unwrap_model(model)
        torch.save({"world": acc.num_processes, "backend": acc.state.backend, "loss": float(loss.detach()),
                    "grads": {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}},
                   out)


def train(out: Path) -> None:
    from accelerate import PartialState

    from conf.schema import DPOConfig, LoraConfig, ModelConfig, SFTConfig
    from tests.conftest import build_test_model
    from training.dpo import dpo_example, train_dpo
    from training.models import merge_adapter
    from training.prompts import user_turn
    from training.sft import sft_example, train_sft

    state = PartialState(cpu=True)
    model_dir = out / "tiny-model"
    if state.is_main_process:
        build_test_model(model_dir)
    state.wait_for_everyone()
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    model_cfg = ModelConfig(build_from_scratch=True, dtype="float32")
    sft_rows = [sft_example(q, c, "Box it.") for q, c, _ in PAIRS] * 2
    sft = train_sft(model_dir, sft_rows, SFTConfig(lora=lora, epochs=1, batch_size=2, grad_accum=1, max_seq_len=128,
                                                   learning_rate=1e-3, save_steps=1000, merge=False),
                    model_cfg, out / "sft")
    merged = out / "sft-merged"
    if state.is_main_process:
        merge_adapter(model_dir, out / "sft" / "adapter", merged, dtype="float32")
    state.wait_for_everyone()
    dpo_rows = [dpo_example(user_turn(q, "Box it."), c, r, weight=w) for (q, c, r), w in zip(PAIRS, WEIGHTS, strict=True)]
    dpo = train_dpo(merged, dpo_rows * 2, DPOConfig(lora=lora, epochs=1, batch_size=2, grad_accum=1, max_length=128,
                                                    max_prompt_length=64, learning_rate=1e-3, save_steps=1000,
                                                    # TRL 1.16 caches precomputed reference log-probs of an
                                                    # in-memory dataset in a per-process temp dir, which the
                                                    # other ranks cannot open: off with more than one process
                                                    precompute_ref_log_probs=state.num_processes == 1),
                    model_cfg, out / "dpo")
    if state.is_main_process:
        (out / "result.json").write_text(json.dumps({
            "world_size": state.num_processes, "backend": str(getattr(state, "backend", None)),
            "sft": {k: v for k, v in sft.metrics.items() if isinstance(v, int | float)},
            "dpo": {k: v for k, v in dpo.metrics.items() if isinstance(v, int | float)}}, indent=2))


if __name__ == "__main__":
    # CPU processes talk over gloo: accelerate (and the HF Trainer) pick MULTI_CPU when told to use the CPU
    # and the launcher set LOCAL_RANK/WORLD_SIZE.
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    mode, target = sys.argv[1], Path(sys.argv[2]).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    {"grad": grad, "train": train}[mode](target)
