"""One user turn everywhere: the chat-templated prompt token ids of SFT, sampling, DPO and evaluation agree."""

from __future__ import annotations

from datasets import Dataset

from conf import config_from_dict
from tasks.common.records import Pair, Problem
from tasks.dpo import dpo_examples
from tasks.sft import sft_examples
from training.dpo import WeightedDPOTrainer, dpo_args
from training.models import load_model, load_tokenizer, peft_lora_config
from training.prompts import chat_prompt, prompt_token_ids, user_turn
from training.sft import build_sft_trainer

# trailing spaces and an inner newline: every stage must build the same turn from the same problem
PROBLEM = Problem(id="p-0", question="  Tom has 3 apples.\nHe buys 4 more. How many now?  ", answer="7",
                  solution="3 + 4 = 7. The answer is $\\boxed{7}$.", source="t", split="pool")


def test_user_turn():
    assert user_turn(" Q? ", "Do it.") == "Q?\nDo it."
    assert user_turn("Q?", "") == "Q?" and user_turn("Q?", None) == "Q?"


def test_prompt_token_ids_identical_in_sft_sampling_dpo_and_evaluation(tiny_model_dir, tmp_path):
    cfg = config_from_dict({"model": {"build_from_scratch": True},
                            "sft": {"max_seq_len": 256, "lora": {"r": 4, "alpha": 8}},
                            "dpo": {"max_length": 256, "max_prompt_length": 128, "lora": {"r": 4, "alpha": 8},
                                    "precompute_ref_log_probs": False}})
    tok = load_tokenizer(tiny_model_dir)

    # sampling (tasks.generation.sampling) and evaluation (tasks.evaluation.evalsets) tokenise chat_prompt strings
    sampling = prompt_token_ids(tok, chat_prompt(tok, PROBLEM.question, cfg.sample.instruction))
    evaluation = prompt_token_ids(tok, chat_prompt(tok, PROBLEM.question, cfg.evaluate.instruction))

    # SFT: the stage's rows through TRL's own tokenisation; the prompt is what precedes the first label
    rows, _ = sft_examples([PROBLEM], cfg.sample.instruction)
    sft = build_sft_trainer(tiny_model_dir, rows, cfg.sft, cfg.model, tmp_path / "sft")
    ex = sft.train_dataset[0]
    sft_prompt = ex["input_ids"][: next(i for i, label in enumerate(ex["labels"]) if label != -100)]

    # DPO: pairs.jsonl's prompt is the sampling user turn (sample stage's prompts.jsonl)
    pair = Pair(problem_id=PROBLEM.id, prompt=user_turn(PROBLEM.question, cfg.sample.instruction),
                chosen=PROBLEM.solution, rejected="3 + 4 = 8. The answer is $\\boxed{8}$.", weight=1.0,
                strategy="weighted", chosen_index=0, rejected_index=1, confidence_chosen=0.5,
                confidence_rejected=0.6, similarity=0.9, wrongness=0.5, absurdity=0.0, perplexity=1.5,
                hardness=1.0, weight_raw=1.0)
    model = load_model(tiny_model_dir, dtype="float32", for_training=True)
    dpo = WeightedDPOTrainer(model, args=dpo_args(cfg.dpo, tmp_path / "dpo"),
                             train_dataset=Dataset.from_list(dpo_examples([pair])), processing_class=tok,
                             peft_config=peft_lora_config(cfg.dpo.lora))
    dpo_prompt = dpo.train_dataset[0]["prompt_ids"]

    assert sampling == evaluation == sft_prompt == list(dpo_prompt)
    assert tok.decode(sampling).count("Tom has 3 apples.\nHe buys 4 more. How many now?\n") == 1
