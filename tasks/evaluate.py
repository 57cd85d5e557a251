"""The evaluate stage: greedy answers of one model on the evaluation sets, graded.

``run_evaluate(cfg, model_dir, data_dir, out)`` reads the model from ``model_dir/model.json``
(base, SFT or DPO stage) and the sets ``data_dir/eval/<name>.jsonl`` (``Problem`` rows; every file
there when ``evaluate.datasets`` is empty, else the named ones, each cut to ``evaluate.limit``). All
files are read and checked *before* any generation, so a missing set fails in seconds with its path.

Prompts are the model's chat template around ``question + "\\n" + evaluate.instruction``, zero-shot
by default. With ``evaluate.few_shot = k`` the first ``k`` rows with a worked solution of the data
stage's ``sft.jsonl`` precede the question as user/assistant turns: they are training data, so no
evaluation problem leaks into another's prompt, and their solutions show the answer format the
model was fine-tuned on (:func:`training.prompts.chat_prompt`, the same user turn as every other stage).
Generation is greedy (temperature 0, one output per problem) through
``tasks.generation.engine.generate`` (``evaluate.engine``; vLLM settings from ``sample.vllm``), one call for
all sets so vLLM starts once. Grading is :mod:`tasks.evaluation.grading`, with sound accuracy next to answer
accuracy: exact on synthetic sets, judged by the verifier (``verify:`` settings) elsewhere.

Writes ``out/<dataset>.jsonl`` (one :class:`tasks.evaluation.grading.Graded` per problem, in the set's order) and
``out/metrics.json``::

    {"model": {"base": "...", "adapter": "...", "merged": null},
     "datasets": {"gsm8k_test": {"format": "gsm8k", "n": 1319, "accuracy": 0.62, "ci_low": 0.59,
                                 "ci_high": 0.645, "correct": 818, "reasons": {...},
                                 "strict_match": 0.60, "flexible_extract": 0.63, "disagreements": 41,
                                 "disagreement_kinds": {...}, "examples": {...},
                                 "sound_accuracy": 0.55, "sound_ci_low": 0.52, "sound_ci_high": 0.58,
                                 "sound_correct": 725, "unsound_correct": 93, "sound_method": "verifier"}}}

and returns flat metrics for the manifest and MLflow: ``{"gsm8k_test/accuracy": 0.62,
"gsm8k_test/ci_low": ..., "gsm8k_test/wrong_truncated": 12, "gsm8k_test/strict_match": ..., ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.evaluation.evalsets import few_shot_examples, flat_metrics, grade_sets, load_eval_sets
from tasks.generation.engine import chat_prompt, generate
from training.modelref import read_model_ref

VERSION = "7"  # bump when grading changes (4: verifier 6's answer extraction and equivalence; 5: verifier 7's numbers;
# 6: verifier 8's answer after a marker inside a text group; 7: verifier 9's unicode fractions and mixed numbers)


def run(cfg, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs ``model`` (a model stage), ``data``."""
    return run_evaluate(cfg, inputs["model"], inputs["data"], out)


def run_evaluate(cfg, model_dir: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    """Evaluate the model of ``model_dir`` on the sets of ``data_dir/eval``; see the module doc."""
    ev = cfg.evaluate
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    sets = load_eval_sets(data_dir, ev.datasets, ev.limit)
    shots = few_shot_examples(data_dir, ev.few_shot)
    model = read_model_ref(model_dir)
    from training.models import load_tokenizer  # torch: imported when the stage runs

    tokenizer = load_tokenizer(model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)

    prompts = {name: [chat_prompt(tokenizer, p.question, ev.instruction, shots) for p in problems]
               for name, problems in sets.items()}
    flat_prompts = [p for name in sets for p in prompts[name]]
    gens = generate(model, flat_prompts, engine=ev.engine, n=1, temperature=0.0, max_tokens=ev.max_tokens,
                    seed=ev.seed, batch_size=ev.batch_size, vllm=cfg.sample.vllm,
                    adapter_mode=ev.adapter_mode, dtype=cfg.model.dtype)
    if len(gens) != len(flat_prompts):
        raise RuntimeError(f"generate returned {len(gens)} results for {len(flat_prompts)} prompts")

    summaries = grade_sets(cfg, sets, prompts, gens, out)
    report = {"model": {"base": model.base, "adapter": model.adapter, "merged": model.merged},
              "datasets": summaries}
    (out / "metrics.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return flat_metrics(summaries)
