"""Evaluation sets and their grading: the evaluate stage's library (``tasks/evaluate.py`` runs it).

Reading and checking the ``eval/<name>.jsonl`` sets, few-shot examples, grading one set's greedy outputs
(:mod:`tasks.evaluation.grading`), sound accuracy (exact on synthetic sets, else the verifier) and the
flat metrics of the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.common.records import Problem, read_records, write_jsonl
from tasks.evaluation.grading import REASONS, Graded, exact_sound, grade, summarise
from tasks.generation.engine import Generation

GSM8K_FORMATS = ("gsm8k", "synthetic")  # solutions end with "#### <answer>": harness graders apply


class EvaluateError(ValueError):
    """An evaluation input that is missing or malformed; the message names the file (and line)."""


def read_problem_file(path: Path) -> list[Problem]:
    return read_records(path, Problem, error=EvaluateError)


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


def grade_sets(cfg, sets: Mapping[str, Sequence[Problem]], prompts: Mapping[str, Sequence[str]],
               gens: Sequence[Sequence[Generation]], out: Path) -> dict[str, dict[str, Any]]:
    """Grade every set's slice of ``gens`` (one flat list, sets in order), judge soundness, write
    ``out/<set>.jsonl``; returns the summary of each set."""
    ev = cfg.evaluate
    summaries: dict[str, dict[str, Any]] = {}
    start = 0
    for name, problems in sets.items():
        fmt = dataset_format(cfg, name, problems)
        chunk = gens[start:start + len(problems)]
        start += len(problems)
        graded = grade_set(problems, prompts[name], chunk, gsm8k=fmt in GSM8K_FORMATS)
        graded = judge_soundness(problems, graded, cfg.verify)
        write_jsonl(Path(out) / f"{name}.jsonl", graded)
        summaries[name] = {"format": fmt, **summarise(graded, samples=ev.bootstrap_samples, seed=ev.seed,
                                                        n_examples=ev.n_examples)}
    return summaries
