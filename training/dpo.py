"""Weighted DPO: TRL's ``DPOTrainer`` with a per-pair importance weight.

Each training row is a conversational preference pair with a ``weight`` (from the pairs stage)::

    {"prompt": [{"role": "user", "content": "Tom has 3 apples ...?\\nPlease reason step by step, ..."}],
     "chosen": [{"role": "assistant", "content": "3 + 4 = 7. #### 7"}],
     "rejected": [{"role": "assistant", "content": "3 + 4 = 8. #### 8"}],
     "weight": 1.27}

The loss of a batch is the mean of the weighted per-pair sigmoid DPO losses

    ℓ_i = -log σ(β·[(log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) - log π_ref(y_r|x))])
    L   = (1/B) Σ_i w_i·ℓ_i               (+ rpo_alpha · NLL of the chosen tokens, when set)

so with every ``w_i = 1`` it is exactly TRL's ``loss_type="sigmoid"`` (and with ``rpo_alpha`` TRL's
``loss_type=["sigmoid", "sft"], loss_weights=[1, rpo_alpha]``). The pairs stage already normalises the
weights to mean 1 over the run, so the plain mean keeps the loss on TRL's scale *and* keeps how one
batch's weights compare with the rest of the run; dividing by ``Σ w`` per micro-batch instead would
undo the weights at a per-device batch of 1 and rescale every batch to mean 1. With gradient
accumulation the micro-batch losses are averaged as in TRL. Strategies ``uniform`` and ``random``
carry ``weight = 1``.

The trainer refuses TRL options whose code path would bypass this reduction: any ``loss_type`` other
than ``["sigmoid"]`` (the NLL term is ``rpo_alpha``), ``use_liger_kernel`` (Liger's fused DPO loss
computes its own mean), ``ld_alpha``, ``use_weighting`` and other f-divergences.

What the subclass changes in TRL 1.16 and nothing else: the ``weight`` column survives column
pruning (``_set_signature_columns_if_needed``), the collator stacks it into a ``weight`` tensor, the
precomputing reference pass ignores it (``compute_ref_log_probs``), and ``_compute_loss`` reduces the
per-pair loss with the weights. A step does what TRL's does: one policy forward of the concatenated
[chosen; rejected] batch and, unless precomputed, one no-grad reference forward (TRL's own on-the-fly
branch), and it logs every metric TRL logs (entropy, logits, token accuracy, rewards, log-probs,
num_tokens) plus ``loss/unweighted``, ``weight/{mean,min,max}`` and ``nll``. Unlike TRL, the metrics are
kept as device tensors and converted to numbers once per ``log`` (``metrics_to_host``), so a step makes
no host sync of its own. Tokenisation, the chat template, the fused LM head, precomputed reference
log-probs and the reference-by-disabled-adapter logic are TRL's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from trl import DPOConfig as TrlDPOConfig
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import use_adapter

from training.models import resolve_dtype
from training.prompts import user_messages
from training.sft import (
    TrainResult,
    common_args,
    drop_printer_when_progress,
    load_for_training,
    run_trainer,
    trainer_inputs,
)

WEIGHT = "weight"

if TYPE_CHECKING:  # conf (pydantic) is not needed at run time: benchmarks import this alone
    from conf.schema import DPOConfig, ModelConfig


def dpo_example(prompt: str, chosen: str, rejected: str, weight: float = 1.0) -> dict[str, Any]:
    """One conversational preference row; ``prompt`` is the user turn that sampling used
    (:func:`training.prompts.user_turn`, stored as ``Pair.prompt``)."""
    return {
        "prompt": user_messages(prompt),
        "chosen": [{"role": "assistant", "content": chosen.strip()}],
        "rejected": [{"role": "assistant", "content": rejected.strip()}],
        WEIGHT: float(weight),
    }


def sigmoid_dpo_losses(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair sigmoid DPO loss ``-log σ(β·(Δ_chosen - Δ_rejected))`` (no reduction)."""
    delta = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * delta)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean(w·v)`` with the weights treated as constants (no gradient flows into them).

    Not ``Σ w·v / Σ w``: the weights arrive normalised to mean 1 over the whole run (pairs stage), so
    the plain mean is on the unweighted loss's scale on average, and a pair with weight 2 gets twice the
    gradient it gets at weight 1 whatever else is in its batch (also at a batch of one)."""
    return (weights.detach().to(values.dtype) * values).mean()


def check_weights(weights: Sequence[float]) -> None:
    """Every weight finite and >= 0, and at least one > 0; the error names the first bad row."""
    for i, w in enumerate(weights):
        if w is None or not math.isfinite(float(w)) or float(w) < 0:
            raise ValueError(f"row {i}: weight must be a finite number >= 0, got {w!r}")
    if weights and not any(float(w) > 0 for w in weights):
        raise ValueError("every pair has weight 0: nothing to train on")


def unweighted_options(args: TrlDPOConfig) -> list[str]:
    """The TRL options set in ``args`` whose code path would not go through :func:`weighted_mean`."""
    out = []
    loss_type = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type)
    if loss_type != ["sigmoid"]:
        out.append(f"loss_type={loss_type}")
    if getattr(args, "loss_weights", None) not in (None, [1.0], [1]):
        out.append(f"loss_weights={args.loss_weights}")
    if getattr(args, "use_liger_kernel", False):
        out.append("use_liger_kernel=True")
    if getattr(args, "ld_alpha", None) is not None:
        out.append(f"ld_alpha={args.ld_alpha}")
    if getattr(args, "use_weighting", False):
        out.append("use_weighting=True")
    if getattr(args, "f_divergence_type", "reverse_kl") not in ("reverse_kl", None):
        out.append(f"f_divergence_type={args.f_divergence_type}")
    return out


@dataclass
class DataCollatorForWeightedPreference(DataCollatorForPreference):
    """TRL's preference collator plus a float ``weight`` tensor of shape ``[batch]`` (1 when absent)."""

    weight_key: str = WEIGHT

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        out[self.weight_key] = torch.tensor(
            [float(e.get(self.weight_key, 1.0)) for e in examples], dtype=torch.float32
        )
        return out


@dataclass
class WeightedDPOConfig(TrlDPOConfig):
    """TRL's DPOConfig plus the two knobs the weighted trainer owns."""

    rpo_alpha: float | None = field(
        default=None, metadata={"help": "Weight of the NLL on the chosen response."}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Keep only the last N prompt tokens (None = no prompt truncation). Applied after TRL drops "
            "the rows whose prompt alone reaches max_length."
        },
    )


class WeightedDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss is the mean of ``w·ℓ`` over the pairs of a batch (module docstring)."""

    _tag_names = ["trl", "dpo", "hnsdpo-weighted"]

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: WeightedDPOConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ):
        if args is None:
            raise ValueError("WeightedDPOTrainer needs explicit args (a WeightedDPOConfig)")
        refused = unweighted_options(args)
        if refused:
            raise ValueError(
                "WeightedDPOTrainer implements the weighted sigmoid loss only; these options would skip the "
                f"per-pair weights: {', '.join(refused)} (keep loss_type=['sigmoid'], ld_alpha=None, "
                "use_weighting=False, f_divergence_type='reverse_kl', use_liger_kernel=False; use rpo_alpha "
                "for the NLL term)"
            )
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        for name, ds in [("train_dataset", train_dataset), ("eval_dataset", eval_dataset)]:
            if ds is not None and hasattr(ds, "column_names"):
                if WEIGHT not in ds.column_names:
                    raise ValueError(f"{name} has no {WEIGHT!r} column (columns: {ds.column_names})")
                check_weights(ds[WEIGHT])
        self.rpo_alpha = args.rpo_alpha
        self.max_prompt_length = args.max_prompt_length
        if data_collator is None:
            tok = getattr(processing_class, "tokenizer", processing_class)
            if tok is None:
                raise ValueError("pass processing_class (the tokenizer)")
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            data_collator = DataCollatorForWeightedPreference(
                pad_token_id=tok.pad_token_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        super().__init__(
            model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )

    # --- data: keep the weight column, truncate long prompts ---------------------------------------------
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if WEIGHT not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHT]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        n = getattr(args, "max_prompt_length", None)
        if n:

            def keep_end(example):
                return {"prompt_ids": example["prompt_ids"][-n:]}

            dataset = dataset.map(keep_end, desc=f"Truncating {dataset_name} prompts to {n} tokens")
        return dataset

    # --- reference pass: the weight is not a model input ---------------------------------------------------
    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != WEIGHT})

    # --- the loss -----------------------------------------------------------------------------------------
    def _policy_forward(self, model, inputs):
        """One forward of the concatenated [chosen; rejected] batch through ``model``: (outputs, per-token
        log-probs of the completion positions, the shifted completion mask, the model kwargs, the labels)."""
        non_model = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", WEIGHT}
        model_kwargs = {k: v for k, v in inputs.items() if k not in non_model}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        return outputs, outputs.log_probs[:, -shift_mask.size(1):], shift_mask, model_kwargs, labels

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        outputs, per_token_logps, shift_mask, model_kwargs, labels = self._policy_forward(model, inputs)
        seq_len = shift_mask.size(1)
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)

        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen_logps, ref_rejected_logps = self._reference_logps(model_kwargs, labels, seq_len)

        losses = sigmoid_dpo_losses(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, self.beta
        )
        weights = inputs[WEIGHT].to(losses.device) if WEIGHT in inputs else torch.ones_like(losses)
        loss = weighted_mean(losses, weights)
        nll = None
        if self.rpo_alpha:
            # TRL's "sft" term, -mean of the chosen tokens' log-probs, without boolean indexing (a host sync)
            chosen_mask = shift_mask.chunk(2, dim=0)[0].bool()
            chosen_token_logps = per_token_logps.chunk(2, dim=0)[0]
            nll = -torch.where(chosen_mask, chosen_token_logps, 0.0).sum() / chosen_mask.sum()
            loss = loss + self.rpo_alpha * nll

        with torch.no_grad():
            self._log_batch(
                mode,
                inputs,
                outputs,
                shift_mask,
                losses,
                weights,
                (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps),
                nll,
            )
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    # --- likelihood displacement: the chosen and rejected responses before and after DPO ---------------
    def displacement(self, max_pairs: int) -> dict[str, float]:
        """Mean log-probability of the chosen and the rejected responses of the first ``max_pairs`` training
        pairs under the policy *before* DPO (the reference: the new LoRA starts at zero, so the reference is
        the starting policy) and *after* it, summed over the completion tokens (``logps_*``, TRL's
        ``logps/chosen`` convention) and per token (``logp_token_*``). ``logps_chosen_delta < 0`` while the
        margin grows is likelihood displacement: DPO pushed the chosen response down too. Also the share of
        pairs whose chosen log-prob fell."""
        from torch.utils.data import DataLoader

        ds = self.train_dataset
        ds = ds.select(range(min(max_pairs, len(ds))))
        bs = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
        keep = [c for c in ("prompt_ids", "chosen_ids", "rejected_ids", WEIGHT) if c in ds.column_names]
        loader = DataLoader(ds.select_columns(keep), batch_size=bs, collate_fn=self.data_collator, shuffle=False)
        tot: dict[str, float] = dict.fromkeys(
            ("c0", "c1", "r0", "r1", "tc0", "tc1", "tr0", "tr1", "fell"), 0.0)
        n = 0
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in loader:
                batch = self._prepare_inputs(batch)
                ref_c, ref_r = self.compute_ref_log_probs(self.model, batch)
                with torch.no_grad():
                    _, per_token_logps, shift_mask, _, _ = self._policy_forward(self.model, batch)
                pol_c, pol_r = per_token_logps.sum(dim=1).chunk(2, dim=0)
                len_c, len_r = shift_mask.sum(dim=1).clamp(min=1).float().chunk(2, dim=0)
                for key, v in (("c0", ref_c), ("c1", pol_c), ("r0", ref_r), ("r1", pol_r),
                               ("tc0", ref_c / len_c), ("tc1", pol_c / len_c), ("tr0", ref_r / len_r),
                               ("tr1", pol_r / len_r), ("fell", (pol_c < ref_c).float())):
                    tot[key] += float(v.float().sum())
                n += int(ref_c.numel())
        finally:
            self.model.train(was_training)
        m = {k: v / max(n, 1) for k, v in tot.items()}
        return {
            "displacement_pairs": n,
            "logps_chosen_before": m["c0"], "logps_chosen_after": m["c1"],
            "logps_chosen_delta": m["c1"] - m["c0"],
            "logps_rejected_before": m["r0"], "logps_rejected_after": m["r1"],
            "logps_rejected_delta": m["r1"] - m["r0"],
            "logp_token_chosen_before": m["tc0"], "logp_token_chosen_after": m["tc1"],
            "logp_token_rejected_before": m["tr0"], "logp_token_rejected_after": m["tr1"],
            "share_chosen_logp_fell": m["fell"],
        }

    def _reference_logps(self, model_kwargs, labels, seq_len):
        """One no-grad forward of the concatenated [chosen; rejected] batch through the reference: TRL 1.16's
        on-the-fly branch of ``_compute_loss`` (the adapter disabled, or the ``ref`` adapter, for PEFT)."""
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
        ):
            if self.ref_model is None and is_peft_model(self.model):
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    ref_outputs = self.model(**model_kwargs, labels=labels, fused_lm_head=True)
            else:
                ref = self.ref_model if self.ref_model is not None else self.model
                ref_outputs = ref(**model_kwargs, labels=labels, fused_lm_head=True)
        return ref_outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)

    def _log_batch(self, mode, inputs, outputs, shift_mask, losses, weights, logps, nll):
        """Every metric TRL 1.16's ``_compute_loss`` logs, plus the unweighted loss, the weight statistics and
        the NLL, stored as device tensors: no host sync per step (``log`` converts them all at once)."""
        gather = self.accelerator.gather_for_metrics
        m = self._metrics[mode]
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps = (x.detach() for x in logps)
        seq_len = shift_mask.size(1)
        chosen_mask, rejected_mask = shift_mask.bool().chunk(2, dim=0)

        def token_mean(values, mask):  # Σ over masked tokens / their count, gathered; 0 without tokens (TRL)
            num = gather(torch.where(mask, values, 0).sum().float()).sum()
            den = gather(mask.sum()).sum()
            return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))

        if outputs.entropy is not None:
            m["entropy"].append(token_mean(outputs.entropy[:, -seq_len:], shift_mask.bool()))
        if mode == "train":
            n_tokens = gather(inputs["attention_mask"].sum()).sum() // self._tp_size
            self._total_train_tokens = self._total_train_tokens + n_tokens  # a device tensor after one step
        m["num_tokens"] = [self._total_train_tokens]
        if outputs.mean_logits is not None:
            chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
            m["logits/chosen"].append(token_mean(chosen_logits, chosen_mask))
            m["logits/rejected"].append(token_mean(rejected_logits, rejected_mask))
        if outputs.is_top1 is not None:
            m["mean_token_accuracy"].append(
                token_mean(outputs.is_top1[:, -seq_len:].chunk(2)[0], chosen_mask)
            )
        chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps)
        rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps)
        margins = gather(chosen_rewards - rejected_rewards)
        w = gather(weights.detach().float())
        m["rewards/chosen"].append(gather(chosen_rewards).mean())
        m["rewards/rejected"].append(gather(rejected_rewards).mean())
        m["rewards/accuracies"].append((margins > 0).float().mean())
        m["rewards/margins"].append(margins.mean())
        m["logps/chosen"].append(gather(chosen_logps).mean())
        m["logps/rejected"].append(gather(rejected_logps).mean())
        m["loss/unweighted"].append(gather(losses.detach()).mean())
        m["weight/mean"].append(w.mean())
        m["weight/min"].append(w.min())
        m["weight/max"].append(w.max())
        if nll is not None:
            m["nll"].append(gather(nll.detach()).mean())

    def metrics_to_host(self) -> dict[str, dict[str, list[float]]]:
        """Turn the stored metric tensors into Python numbers, one transfer per dtype; returns ``_metrics``."""
        pending = [
            (values, i, v)
            for metrics in self._metrics.values()
            for values in metrics.values()
            for i, v in enumerate(values)
            if isinstance(v, torch.Tensor)
        ]
        for is_float in (True, False):
            group = [(values, i, v) for values, i, v in pending if v.is_floating_point() == is_float]
            if group:
                stacked = torch.stack([v.reshape(()) for _, _, v in group])
                host = stacked.float().tolist() if is_float else stacked.long().tolist()
                for (values, i, _), x in zip(group, host, strict=True):
                    values[i] = x
        return self._metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self.metrics_to_host()
        super().log(logs, start_time)


def dpo_args(
    cfg: DPOConfig,
    output_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    report_to: str | list[str] = "none",
    **overrides: Any,
) -> WeightedDPOConfig:
    """``conf.schema.DPOConfig`` -> the trainer's arguments (checkpoints under ``output_dir/checkpoints``)."""
    dtype = dtype or torch.float32
    kw = dict(
        common_args(cfg, Path(output_dir), dtype, report_to),
        beta=cfg.beta,
        max_length=cfg.max_length,
        max_prompt_length=cfg.max_prompt_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        precompute_ref_batch_size=cfg.precompute_ref_batch_size,
        rpo_alpha=cfg.rpo_alpha,
        loss_type=["sigmoid"],
    )
    kw.update(overrides)
    return WeightedDPOConfig(**kw)


def train_dpo(
    model_path: str | Path,
    examples: Iterable[dict[str, Any]],
    cfg: DPOConfig,
    model_cfg: ModelConfig,
    output_dir: str | Path,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    report_to: str | list[str] = "none",
    keep_checkpoints: bool = False,
) -> TrainResult:
    """Train a new LoRA with weighted DPO on top of the plain weights at ``model_path`` (the reference is
    the same weights with the adapter disabled). Writes ``output_dir/adapter`` and ``metrics.jsonl``."""
    output_dir = Path(output_dir)
    rows = list(examples)
    if not rows:
        raise ValueError("train_dpo: no preference pairs")
    dtype = resolve_dtype(model_cfg.dtype)
    tokenizer, model = load_for_training(model_path, model_cfg, cfg.gradient_checkpointing)
    trainer = WeightedDPOTrainer(model, args=dpo_args(cfg, output_dir, dtype=dtype, report_to=report_to),
                                 **trainer_inputs(rows, tokenizer, cfg.lora, output_dir, callbacks))
    drop_printer_when_progress(trainer)
    result = run_trainer(trainer, output_dir, output_dir / "adapter", keep_checkpoints)
    weights = [float(r[WEIGHT]) for r in rows]
    result.metrics.update(
        pairs=len(rows),
        weight_mean=sum(weights) / len(weights),
        weight_min=min(weights),
        weight_max=max(weights),
    )
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"):
        vals = [r[key] for r in result.log_history if key in r]
        if vals:
            result.metrics[key.replace("/", "_") + "_last"] = float(vals[-1])
    if cfg.displacement_pairs:
        result.metrics.update(trainer.displacement(cfg.displacement_pairs))
    return result
