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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasks.common.records import Problem, iter_jsonl, write_jsonl
from tasks.evaluation.grading import REASONS, Graded, exact_sound, grade, summarise
from tasks.generation.engine import Generation, chat_prompt, generate
from training.modelref import read_model_ref
from training.models import load_tokenizer

VERSION = "2"
GSM8K_FORMATS = ("gsm8k", "synthetic")  # solutions end with "#### <answer>": harness graders apply


class EvaluateError(ValueError):
    """An evaluation input that is missing or malformed; the message names the file (and line)."""


def read_problem_file(path: Path) -> list[Problem]:
    out: list[Problem] = []
    for line_no, row in enumerate(iter_jsonl(path), start=1):
        try:
            out.append(Problem.model_validate(row))
        except ValidationError as e:
            raise EvaluateError(f"{path}: line {line_no} is not a valid Problem: {e}") from None
    return out


def load_eval_sets(data_dir: Path, names: Sequence[str], limit: int | None = None) -> dict[str, list[Problem]]:
    """``name -> problems`` from ``data_dir/eval/<name>.jsonl`` (all files when ``names`` is empty).

    Every file is checked before any is read, so the error lists all missing sets at once.
    """
    folder = Path(data_dir) / "eval"
    if names:
        paths = {n: folder / f"{n}.jsonl" for n in names}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise EvaluateError(f"evaluation set(s) not found: {', '.join(missing)}")
    else:
        paths = {p.stem: p for p in sorted(folder.glob("*.jsonl"))}
        if not paths:
            raise EvaluateError(f"no evaluation sets (*.jsonl) in {folder}")
    sets: dict[str, list[Problem]] = {}
    for name, path in paths.items():
        problems = read_problem_file(path)
        if not problems:
            raise EvaluateError(f"{path}: no problems")
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise EvaluateError(f"{path}: duplicate problem id {dup!r}")
        sets[name] = problems[:limit] if limit else problems
    return sets


def dataset_format(cfg, name: str, problems: Sequence[Problem]) -> str:
    """The set's ``data.eval`` format, or (an undeclared file) its problems' ``source``."""
    for spec in cfg.data.eval:
        if spec.name == name:
            return spec.format
    return problems[0].source if problems else "unknown"


def few_shot_examples(data_dir: Path, k: int) -> list[tuple[str, str]]:
    """The first ``k`` (question, solution) pairs of ``data_dir/sft.jsonl`` that have a solution."""
    if k <= 0:
        return []
    path = Path(data_dir) / "sft.jsonl"
    if not path.is_file():
        raise EvaluateError(f"evaluate.few_shot={k} takes its examples from {path}, which does not exist")
    shots: list[tuple[str, str]] = []
    for problem in read_problem_file(path):
        if problem.solution:
            shots.append((problem.question, problem.solution))
            if len(shots) == k:
                return shots
    raise EvaluateError(f"evaluate.few_shot={k}: {path} has only {len(shots)} rows with a solution")


def grade_set(problems: Sequence[Problem], prompts: Sequence[str], generations: Sequence[Sequence[Generation]],
              *, gsm8k: bool) -> list[Graded]:
    """One :class:`Graded` per problem from its prompt and (first) generation."""
    if not (len(problems) == len(prompts) == len(generations)):
        raise ValueError(f"{len(problems)} problems, {len(prompts)} prompts, {len(generations)} generations")
    out: list[Graded] = []
    for problem, prompt, gens in zip(problems, prompts, generations, strict=True):
        if not gens:
            raise ValueError(f"problem {problem.id!r}: the engine returned no generation")
        gen = gens[0]
        g = grade(gen.text, problem.answer, finish_reason=gen.finish_reason, gsm8k=gsm8k)
        out.append(Graded(id=problem.id, prompt=prompt, output=gen.text, gold=problem.answer,
                          extracted=g.extracted, answer_matches=g.answer_matches, correct=g.correct,
                          reason_if_wrong=g.reason_if_wrong, finish_reason=gen.finish_reason,
                          n_tokens=gen.n_tokens, strict=g.strict, strict_correct=g.strict_correct,
                          flexible=g.flexible, flexible_correct=g.flexible_correct))
    return out


def judge_soundness(problems: Sequence[Problem], graded: Sequence[Graded], verify_cfg: Any,
                    verifier: Any = None) -> list[Graded]:
    """``graded`` with ``sound`` set: exact where the problem knows its true steps (synthetic), else judged
    by the verifier (a correct answer and no erroneous step found). ``verifier`` defaults to
    ``MathVerifier(verify_cfg)``; it scores only the outputs that need it, in worker processes."""
    out: list[Graded] = list(graded)
    need = []
    for i, (p, g) in enumerate(zip(problems, graded, strict=True)):
        exact = exact_sound(g.output, p)
        if exact is not None:
            out[i] = g.model_copy(update={"sound": g.correct and exact, "sound_method": "exact"})
        else:
            need.append(i)
    if need:
        if verifier is None:
            from verifier import MathVerifier

            verifier = MathVerifier(verify_cfg)
        items = [{"question": problems[i].question, "solution": graded[i].output, "gold": problems[i].answer,
                  "reference": problems[i].solution, "problem_id": problems[i].id, "index": 0} for i in need]
        verdicts = verifier.score_batch(items, workers=verify_cfg.workers, progress=False)
        for i, v in zip(need, verdicts, strict=True):
            g = graded[i]
            ok = g.correct and v.status not in ("error", "timeout") and v.first_error_step is None
            out[i] = g.model_copy(update={"sound": ok, "sound_method": "verifier",
                                          "first_error_step": v.first_error_step})
    return out


def flat_metrics(datasets: dict[str, dict[str, Any]]) -> dict[str, float | int]:
    """Numbers only, ``<dataset>/<metric>``: what the manifest and MLflow get."""
    flat: dict[str, float | int] = {}
    for name, s in datasets.items():
        for key in ("n", "accuracy", "ci_low", "ci_high", "correct", "strict_match", "flexible_extract",
                    "disagreements", "sound_accuracy", "sound_ci_low", "sound_ci_high", "sound_correct",
                    "unsound_correct"):
            if key in s:
                flat[f"{name}/{key}"] = s[key]
        for reason in REASONS:
            flat[f"{name}/wrong_{reason}"] = s["reasons"][reason]
    return flat


def run_evaluate(cfg, model_dir: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    """Evaluate the model of ``model_dir`` on the sets of ``data_dir/eval``; see the module doc."""
    ev = cfg.evaluate
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    sets = load_eval_sets(data_dir, ev.datasets, ev.limit)
    shots = few_shot_examples(data_dir, ev.few_shot)
    model = read_model_ref(model_dir)
    tokenizer = load_tokenizer(model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)

    prompts = {name: [chat_prompt(tokenizer, p.question, ev.instruction, shots) for p in problems]
               for name, problems in sets.items()}
    flat_prompts = [p for name in sets for p in prompts[name]]
    gens = generate(model, flat_prompts, engine=ev.engine, n=1, temperature=0.0, max_tokens=ev.max_tokens,
                    seed=ev.seed, batch_size=ev.batch_size, vllm=cfg.sample.vllm,
                    adapter_mode=ev.adapter_mode, dtype=cfg.model.dtype)
    if len(gens) != len(flat_prompts):
        raise RuntimeError(f"generate returned {len(gens)} results for {len(flat_prompts)} prompts")

    summaries: dict[str, dict[str, Any]] = {}
    start = 0
    for name, problems in sets.items():
        fmt = dataset_format(cfg, name, problems)
        chunk = gens[start:start + len(problems)]
        start += len(problems)
        graded = grade_set(problems, prompts[name], chunk, gsm8k=fmt in GSM8K_FORMATS)
        graded = judge_soundness(problems, graded, cfg.verify)
        write_jsonl(out / f"{name}.jsonl", graded)
        summaries[name] = {"format": fmt, **summarise(graded, samples=ev.bootstrap_samples, seed=ev.seed,
                                                        n_examples=ev.n_examples)}
    report = {"model": {"base": model.base, "adapter": model.adapter, "merged": model.merged},
              "datasets": summaries}
    (out / "metrics.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return flat_metrics(summaries)


__all__ = ["GSM8K_FORMATS", "VERSION", "EvaluateError", "dataset_format", "few_shot_examples",
           "flat_metrics", "grade_set", "load_eval_sets", "read_problem_file", "run_evaluate"]
