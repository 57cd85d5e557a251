"""Weighted DPO: equals TRL's sigmoid DPO with unit weights, scales gradients by the weights, trains."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig as TrlDPOConfig
from trl import DPOTrainer

from conf.schema import DPOConfig, LoraConfig, ModelConfig
from training.dpo import (
    DataCollatorForWeightedPreference,
    WeightedDPOConfig,
    WeightedDPOTrainer,
    check_weights,
    dpo_example,
    sigmoid_dpo_losses,
    train_dpo,
    weighted_mean,
)
from training.models import load_model, load_tokenizer, peft_lora_config

PAIRS = [
    ("What is 2 + 3?", "2 + 3 = 5. #### 5", "2 + 3 = 6. #### 6"),
    (
        "Tom has 4 apples and eats 1. How many are left?",
        "4 - 1 = 3. The answer is \\boxed{3}.",
        "4 + 1 = 5. #### 5",
    ),
    ("What is 12/60?", "12/60 = 0.2 #### 0.2", "12/60 = 5 so #### 5"),
    ("Weng earns $12 an hour for 50 minutes.", "12/60 = 0.2 per minute. 0.2 x 50 = 10. #### 10", "#### 600"),
]
LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


def rows(weights=(1.0, 1.0, 1.0, 1.0)):
    return [
        dpo_example(q + "\nPlease reason step by step.", c, r, w)
        for (q, c, r), w in zip(PAIRS, weights, strict=True)
    ]


def trl_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_length=96,
        beta=0.1,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    base.update(kw)
    return base


def make_trainer(cls, model_dir, tmp_path, data, args_cls, **kw):
    model = load_model(model_dir, dtype="float32")
    tok = load_tokenizer(model_dir)
    trainer = cls(
        model,
        args=args_cls(**trl_args(tmp_path, **kw)),
        train_dataset=Dataset.from_list(data),
        processing_class=tok,
        peft_config=peft_lora_config(LORA),
    )
    torch.manual_seed(123)  # same non-zero LoRA B in both trainers, so policy != reference
    for name, p in trainer.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    trainer.model.train()
    return trainer


ID_KEYS = ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps", "weight")


def batch_of(trainer, idx):
    ds = trainer.train_dataset
    return trainer.data_collator([{k: ds[i][k] for k in ID_KEYS if k in ds.column_names} for i in idx])


def loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    return loss.detach(), grads


# --- pure pieces ---------------------------------------------------------------------------------------


def test_weighted_mean_and_losses():
    v = torch.tensor([1.0, 2.0, 4.0])
    assert weighted_mean(v, torch.tensor([1.0, 1.0, 1.0])).item() == pytest.approx(7 / 3)
    # the mean of w·ℓ, not Σ w·ℓ / Σ w (14 / 4): the run-level normalisation of the weights is kept
    assert weighted_mean(v, torch.tensor([0.0, 1.0, 3.0])).item() == pytest.approx(14 / 3)
    assert weighted_mean(v, torch.zeros(3)).item() == 0.0
    # one pair alone: its weight scales its loss (Σ w·ℓ / Σ w would give ℓ whatever the weight)
    assert weighted_mean(v[:1], torch.tensor([2.0])).item() == pytest.approx(2.0)
    zero = torch.zeros(2)
    losses = sigmoid_dpo_losses(torch.tensor([-1.0, -5.0]), torch.tensor([-2.0, -1.0]), zero, zero, beta=0.5)
    want = -torch.nn.functional.logsigmoid(torch.tensor([0.5, -2.0]))
    torch.testing.assert_close(losses, want)


@pytest.mark.parametrize(
    "weights, msg", [([1.0, -1.0], "row 1"), ([float("nan")], "row 0"), ([0.0, 0.0], "weight 0")]
)
def test_check_weights_rejects(weights, msg):
    with pytest.raises(ValueError, match=msg):
        check_weights(weights)


def test_collator_adds_weight():
    coll = DataCollatorForWeightedPreference(pad_token_id=0)
    out = coll(
        [
            {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5], "weight": 2.5},
            {"prompt_ids": [1], "chosen_ids": [3], "rejected_ids": [4], "weight": 0.5},
        ]
    )
    assert out["weight"].tolist() == [2.5, 0.5] and out["input_ids"].shape == (4, 4)


def test_dpo_example_is_conversational():
    ex = dpo_example("Q?\nInstr.", " A ", "B", 1.5)
    assert ex["prompt"] == [{"role": "user", "content": "Q?\nInstr."}]
    assert ex["chosen"][0] == {"role": "assistant", "content": "A"} and ex["weight"] == 1.5


# --- against TRL's own trainer -----------------------------------------------------------------------------


@pytest.mark.parametrize("precompute", [False, True])
@pytest.mark.parametrize("rpo_alpha", [None, 0.5])
def test_unit_weights_equal_trl_sigmoid_loss_and_grads(tiny_model_dir, tmp_path, precompute, rpo_alpha):
    trl_kw = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, rpo_alpha]} if rpo_alpha else {}
    ref = make_trainer(
        DPOTrainer,
        tiny_model_dir,
        tmp_path / "trl",
        rows(),
        TrlDPOConfig,
        precompute_ref_log_probs=precompute,
        **trl_kw,
    )
    ours = make_trainer(
        WeightedDPOTrainer,
        tiny_model_dir,
        tmp_path / "ours",
        rows(),
        WeightedDPOConfig,
        precompute_ref_log_probs=precompute,
        rpo_alpha=rpo_alpha,
    )
    loss_ref, g_ref = loss_and_grads(ref, batch_of(ref, range(4)))
    loss_ours, g_ours = loss_and_grads(ours, batch_of(ours, range(4)))
    assert abs(loss_ref.item() - 0.6931) > 1e-3  # policy differs from the reference: a real comparison
    torch.testing.assert_close(loss_ours, loss_ref, atol=1e-5, rtol=1e-5)
    assert g_ours.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g_ours[name], g_ref[name], atol=1e-5, rtol=1e-5, msg=name)
    assert ref._metrics["train"]["rewards/margins"][0] == pytest.approx(
        ours.metrics_to_host()["train"]["rewards/margins"][0], abs=1e-5
    )


def test_displacement_reads_the_same_log_probs_as_the_loss(tiny_model_dir, tmp_path):
    """The displacement diagnostic's "after" log-probs are the loss's own ``logps/chosen|rejected`` (the
    policy), its "before" ones the reference's (``logps − rewards/β``), on the same pairs."""
    trainer = make_trainer(WeightedDPOTrainer, tiny_model_dir, tmp_path, rows(), WeightedDPOConfig,
                           precompute_ref_log_probs=False)
    d = trainer.displacement(10)
    assert trainer.model.training  # left as it was
    assert d["displacement_pairs"] == 4
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch_of(trainer, range(4)))
    m = trainer.metrics_to_host()["eval"]
    beta = trainer.beta
    assert d["logps_chosen_after"] == pytest.approx(m["logps/chosen"][-1], rel=1e-5)
    assert d["logps_rejected_after"] == pytest.approx(m["logps/rejected"][-1], rel=1e-5)
    assert d["logps_chosen_before"] == pytest.approx(m["logps/chosen"][-1] - m["rewards/chosen"][-1] / beta, rel=1e-4)
    assert d["logps_rejected_before"] == pytest.approx(
        m["logps/rejected"][-1] - m["rewards/rejected"][-1] / beta, rel=1e-4)
    assert abs(d["logps_chosen_delta"]) > 1e-4  # the LoRA B is non-zero: policy != reference
    assert d["logp_token_chosen_before"] < 0 and 0.0 <= d["share_chosen_logp_fell"] <= 1.0
    assert trainer.displacement(2)["displacement_pairs"] == 2


def test_doubling_one_weight_scales_its_gradient(tiny_model_dir, tmp_path):
    w = [1.0, 2.0, 1.0, 1.0]
    trainer = make_trainer(
        WeightedDPOTrainer,
        tiny_model_dir,
        tmp_path,
        rows(w),
        WeightedDPOConfig,
        precompute_ref_log_probs=False,
    )
    loss, grads = loss_and_grads(trainer, batch_of(trainer, range(4)))
    singles = [loss_and_grads(trainer, batch_of(trainer, [i])) for i in range(4)]
    total = len(w)  # mean of w·ℓ over the batch; a single pair's loss is already w_i·ℓ_i
    want_loss = sum(li for li, _ in singles) / total
    assert loss.item() == pytest.approx(want_loss.item(), abs=1e-5)
    unweighted = sum(li / wi for wi, (li, _) in zip(w, singles, strict=True)) / 4
    assert abs(want_loss.item() - unweighted.item()) > 1e-4  # the weight matters for this batch
    for name, g in grads.items():
        # singles were computed at the pair's own weight: w_i·∇ℓ_i each, so their mean is the batch's
        want = sum(gi[name] for _, gi in singles) / total
        torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-4, msg=name)
    logged = trainer.metrics_to_host()["train"]
    assert logged["weight/mean"][0] == pytest.approx(1.25) and logged["weight/max"][0] == 2.0


def test_weight_two_doubles_the_gradient_at_batch_size_one(tiny_model_dir, tmp_path):
    """At a per-device batch of 1 a pair with weight 2 gets twice the loss and gradient of weight 1."""
    out = {}
    for w in (1.0, 2.0):
        trainer = make_trainer(WeightedDPOTrainer, tiny_model_dir, tmp_path / str(w), rows([w, 1.0, 1.0, 1.0]),
                               WeightedDPOConfig, precompute_ref_log_probs=False, per_device_train_batch_size=1)
        out[w] = loss_and_grads(trainer, batch_of(trainer, [0]))
    (l1, g1), (l2, g2) = out[1.0], out[2.0]
    assert l1.item() > 0 and l2.item() == pytest.approx(2 * l1.item(), rel=1e-5)
    for name in g1:
        torch.testing.assert_close(g2[name], 2 * g1[name], atol=1e-6, rtol=1e-4, msg=name)


HOST_SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__")


def train_counting(trainer, monkeypatch, steps=2):
    """Train ``steps`` steps; per step, count the backbone forwards by kind (policy: with grad and the adapter
    on; reference: no grad, adapter off) and the tensor-to-host conversions made by ``compute_loss`` outside
    the model's forward (each is a device sync on a GPU)."""
    peft_model = trainer.model
    lora = next(m for m in peft_model.modules() if hasattr(m, "lora_A") and hasattr(m, "disable_adapters"))
    state = {"loss": False, "model": 0}
    forwards, syncs = [], []

    def on_backbone(module, args, kwargs):
        grad, off = torch.is_grad_enabled(), lora.disable_adapters
        kind = "policy" if grad and not off else "reference" if not grad and off else f"grad={grad},off={off}"
        forwards[-1][kind] = forwards[-1].get(kind, 0) + 1

    def enter(module, args, kwargs):
        state["model"] += 1

    def leave(module, args, kwargs, output):
        state["model"] -= 1

    for name in HOST_SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **kw):
            if state["loss"] and not state["model"]:
                syncs[-1] += 1
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    compute_loss = trainer.compute_loss

    def compute_loss_counted(*a, **kw):
        forwards.append({})
        syncs.append(0)
        state["loss"] = True
        try:
            return compute_loss(*a, **kw)
        finally:
            state["loss"] = False

    monkeypatch.setattr(trainer, "compute_loss", compute_loss_counted)
    hooks = [
        peft_model.get_base_model().model.register_forward_pre_hook(on_backbone, with_kwargs=True),
        peft_model.register_forward_pre_hook(enter, with_kwargs=True),
        peft_model.register_forward_hook(leave, with_kwargs=True),
    ]
    try:
        trainer.train()
    finally:
        for h in hooks:
            h.remove()
        monkeypatch.undo()
    assert len(forwards) == steps
    return forwards, syncs, [r for r in trainer.state.log_history if "loss" in r]


@pytest.mark.parametrize("precompute", [False, True])
def test_same_forwards_and_metrics_as_trl_without_host_syncs(
    tiny_model_dir, tmp_path, precompute, monkeypatch
):
    kw = dict(
        precompute_ref_log_probs=precompute, per_device_train_batch_size=2, max_steps=2, save_strategy="no"
    )
    trl = make_trainer(DPOTrainer, tiny_model_dir, tmp_path / "trl", rows(), TrlDPOConfig, **kw)
    ours = make_trainer(
        WeightedDPOTrainer, tiny_model_dir, tmp_path / "ours", rows(), WeightedDPOConfig, **kw
    )
    trl_fwd, trl_syncs, trl_logs = train_counting(trl, monkeypatch)
    our_fwd, our_syncs, our_logs = train_counting(ours, monkeypatch)
    # one policy pass of the concatenated [chosen; rejected] batch, plus one reference pass unless precomputed
    want = {"policy": 1} if precompute else {"policy": 1, "reference": 1}
    assert trl_fwd == [want, want] and our_fwd == trl_fwd
    # TRL converts its metrics every step (the counter works); ours stay on the device until `log`
    assert min(trl_syncs) >= 10 and our_syncs == [0, 0]
    # same logged metrics as TRL (plus ours), with equal values for unit weights
    assert len(our_logs) == len(trl_logs) == 2
    for trl_row, our_row in zip(trl_logs, our_logs, strict=True):
        assert trl_row.keys() <= our_row.keys()
        assert {"loss/unweighted", "weight/mean", "weight/min", "weight/max"} <= our_row.keys()
        for key, value in trl_row.items():
            assert isinstance(our_row[key], (int, float)), key
            assert our_row[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert {"entropy", "logits/chosen", "mean_token_accuracy", "num_tokens"} <= trl_logs[0].keys()


def test_trainer_requires_weight_column_and_sigmoid(tiny_model_dir, tmp_path):
    data = [{k: v for k, v in r.items() if k != "weight"} for r in rows()]
    with pytest.raises(ValueError, match="no 'weight' column"):
        make_trainer(WeightedDPOTrainer, tiny_model_dir, tmp_path, data, WeightedDPOConfig)
    for kw, named in [({"loss_type": ["ipo"]}, "loss_type"), ({"loss_type": ["sigmoid", "sft"]}, "loss_type"),
                      ({"use_liger_kernel": True}, "use_liger_kernel"), ({"use_weighting": True}, "use_weighting"),
                      ({"ld_alpha": 0.5}, "ld_alpha")]:
        with pytest.raises(ValueError, match=f"weighted sigmoid loss only.*{named}"):
            make_trainer(WeightedDPOTrainer, tiny_model_dir, tmp_path, rows(), WeightedDPOConfig, **kw)


def test_max_prompt_length_keeps_prompt_end(tiny_model_dir, tmp_path):
    trainer = make_trainer(
        WeightedDPOTrainer,
        tiny_model_dir,
        tmp_path,
        rows(),
        WeightedDPOConfig,
        precompute_ref_log_probs=False,
        max_prompt_length=8,
    )
    full = make_trainer(
        WeightedDPOTrainer,
        tiny_model_dir,
        tmp_path,
        rows(),
        WeightedDPOConfig,
        precompute_ref_log_probs=False,
    )
    for short, long in zip(
        trainer.train_dataset["prompt_ids"], full.train_dataset["prompt_ids"], strict=False
    ):
        assert len(long) > 8 and short == long[-8:]


# --- training ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["none", pytest.param("4bit", marks=pytest.mark.slow)])
def test_train_dpo_reduces_loss_and_logs(tiny_model_dir, tmp_path, quantization):
    steps = 8 if quantization == "none" else 5
    cfg = DPOConfig(
        beta=0.5,
        learning_rate=2e-2,
        max_steps=steps,
        batch_size=4,
        max_length=96,
        max_prompt_length=48,
        lora=LORA,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        save_steps=100,
        logging_steps=1,
    )
    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", quantization=quantization)
    result = train_dpo(tiny_model_dir, rows([0.5, 1.0, 1.5, 2.0]), cfg, model_cfg, tmp_path)
    m = result.metrics
    assert m["steps"] == steps and m["train_loss_last"] < m["train_loss_first"] - 0.05
    assert m["rewards_margins_last"] > 0 and m["weight_max"] == 2.0
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in history if "loss" in r]
    assert (
        len(logged) == steps
        and {"rewards/accuracies", "weight/mean", "weight/min", "weight/max"} <= logged[0].keys()
    )
    assert logged[0]["weight/min"] >= 0.5 and logged[0]["weight/mean"] == pytest.approx(1.25)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "checkpoints").exists()
    assert m["displacement_pairs"] == 4 and m["logps_chosen_after"] != m["logps_chosen_before"]
    assert m["logps_chosen_after"] - m["logps_rejected_after"] > m["logps_chosen_before"] - m["logps_rejected_before"]


def test_run_dpo_stage_from_sft_adapter(tiny_model_dir, tmp_path):
    from peft import get_peft_model

    from conf import config_from_dict
    from tasks.common.records import Pair, write_jsonl
    from tasks.dpo import run_dpo
    from training.modelref import read_model_ref, write_model_ref

    sft_dir, pairs_dir, out = tmp_path / "sft", tmp_path / "pairs", tmp_path / "dpo"
    for d in (sft_dir, pairs_dir, out):
        d.mkdir()
    get_peft_model(load_model(tiny_model_dir, dtype="float32"), peft_lora_config(LORA)).save_pretrained(
        sft_dir / "adapter"
    )
    write_model_ref(sft_dir, base=str(tiny_model_dir), adapter=sft_dir / "adapter")  # SFT saved no merged
    feats = dict(rejected_index=1, confidence_chosen=0.5, confidence_rejected=0.6, similarity=0.7, wrongness=0.4,
                 absurdity=0.1, perplexity=2.0, hardness=0.5, weight_raw=1.0)
    write_jsonl(pairs_dir / "pairs.jsonl", [
        Pair(problem_id=f"p{i}", prompt=r["prompt"][0]["content"], chosen=r["chosen"][0]["content"],
             rejected=r["rejected"][0]["content"], weight=r["weight"], strategy="uniform", chosen_index=0, **feats)
        for i, r in enumerate(rows())])
    cfg = config_from_dict({
        "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
        "dpo": {"max_steps": 2, "batch_size": 2, "max_length": 96, "max_prompt_length": 48,
                "lora": LORA.model_dump(), "logging_steps": 1}})
    metrics = run_dpo(cfg, sft_dir, pairs_dir, out)
    json.dumps(metrics)
    assert metrics["steps"] == 2 and metrics["pairs"] == 4 and metrics["strategy"] == "uniform"
    ref = read_model_ref(out)
    assert ref.base == str((out / "input_model").resolve()) and ref.adapter == str(
        (out / "adapter").resolve()
    )
    assert ref.merged is None and (out / "input_model" / "config.json").is_file()
    with pytest.raises(FileNotFoundError, match="pairs.jsonl"):
        run_dpo(cfg, sft_dir, tmp_path, out)
