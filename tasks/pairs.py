"""The pairs stage: (chosen, hard negative) preference pairs with importance weights.

Pure core :func:`build_pairs` (tested directly on hand-made inputs) and the stage shell
:func:`run_pairs`, which reads the sample, verify and data folders and writes ``pairs.jsonl``,
``stats.json``, ``weights.png`` and ``hardness.png``. One row of ``pairs.jsonl``::

    {"problem_id": "gsm8k_train-17", "prompt": "Natalia sold clips to ...", "chosen": "... \\boxed{72}",
     "rejected": "... \\boxed{96}", "weight": 1.09, "strategy": "weighted", "chosen_index": 2,
     "rejected_index": 5, "confidence_chosen": 0.74, "confidence_rejected": 0.81, "similarity": 0.83,
     "wrongness": 0.46, "absurdity": 0.09, "perplexity": 1.23, "hardness": 1.78, "weight_raw": 0.86,
     "clipped": false}

Definitions (DESIGN.md "Weights and hard negatives"; coefficients in ``conf.schema.PairsConfig``):

* Confidence ``c = exp(lp)`` and perplexity ``ppl = exp(−lp)`` with ``lp`` = the sample's
  ``logprob_mean`` (mean token log-probability; ``lp > 0`` is clamped to 0, ``ppl`` is capped at
  ``exp(700)`` so it stays a finite float). A NaN/±inf ``lp`` is replaced by the *least confident
  finite* ``lp`` among the problem's samples, or by ``pairs.fallback_logprob_mean`` when the problem has
  none; such samples are counted in ``stats["nonfinite_logprobs"]``.
* Candidates are the samples with a verdict whose status is ``ok`` or ``unparsed`` (an unparsed answer
  is a verified failure). ``error``/``timeout`` verdicts say nothing about the sample: it is left out and
  counted (``samples_unverified``), as are samples with no verdict (``samples_missing_verdict``).
* Chosen: the correct candidate with the lowest wrongness (ties: highest confidence, then lowest
  index). When no candidate is correct and ``pairs.fallback_to_reference`` is set, the problem's
  reference ``solution`` is chosen, with confidence = the mean confidence of the problem's candidates
  (the model's log-probability of the reference is unknown; the mean makes the confidence gap
  ``c_r − c_c`` positive for the negatives the model is more sure of than usual).
* Hardness of an incorrect candidate r (each term in [0, 1], coefficients ``pairs.hardness``)::

      h_r = k_conf·c_r + k_sim·s_r + k_wrong·wrongness_r + k_abs·absurdity_r

  with ``s_r = max_p similarity_fn(text_r, text_p)`` over the correct candidates p of the problem (the
  reference when it is the chosen). A hard negative is one the model is confident in (high ``c_r``),
  that looks like a correct solution (high ``s_r``), and that the verifier still finds wrong
  (elevated wrongness/absurdity). Incorrect candidates with identical text (after stripping
  whitespace) count once (lowest index kept); a candidate identical to the chosen is dropped.
* Selection: ``weighted`` and ``uniform`` take the ``per_problem`` hardest (ties: lowest index);
  ``random`` draws ``per_problem`` of them uniformly with ``random.Random(f"{seed}:{problem_id}")`` over
  the candidates in index order, so the draw does not depend on the order of problems or samples.
* Weight of a pair (chosen c, rejected r), coefficients ``pairs.weights``::

      w_raw = a·wrongness_r + b·max(0, c_r − c_c) + g·norm(log ppl_r)
      norm(x) = (x − min X) / (max X − min X)   (0 when max X = min X)
      w = clip(w_raw / mean(w_raw), w_min, w_max);   weight = (1 − λ) + λ·w

  ``X`` = ``log ppl = −lp`` of every incorrect candidate of the run (all problems, before selection
  and de-duplication), the mean is over the run's selected pairs, and ``clipped`` says whether the
  ratio was outside ``[w_min, w_max]``. If every ``w_raw`` is 0 the ratio is 1. ``uniform`` and
  ``random`` give ``weight = 1`` (``weight_raw`` is still reported for comparison).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from conf.schema import PairsConfig
from tasks.records import Pair, Problem, Sample, iter_jsonl, write_jsonl
from tasks.verify import FAILED_STATUSES, read_problems, read_samples
from verifier.verdict import Verdict

VERSION = "1"  # bump when the pairing rules or weight formula change
STRATEGIES = ("weighted", "uniform", "random")
MAX_LOG_PPL = 700.0  # exp(700) is still a finite float

SimilarityFn = Callable[[str, str], float]


class NoPairsError(RuntimeError):
    """The run produced no preference pair; the message says why (counts per cause)."""


@dataclass(frozen=True)
class Candidate:
    """A solution of one problem with the features the pairing uses (``index`` None = reference)."""

    index: int | None
    text: str
    lp: float  # finite logprob_mean (after NaN/inf substitution and clamping to <= 0)
    correct: bool
    wrongness: float
    absurdity: float

    @property
    def confidence(self) -> float:
        return math.exp(self.lp)

    @property
    def log_ppl(self) -> float:
        return min(-self.lp, MAX_LOG_PPL)

    @property
    def perplexity(self) -> float:
        return math.exp(self.log_ppl)


def hardness(cfg: PairsConfig, confidence: float, similarity: float, wrongness: float,
             absurdity: float) -> float:
    """``k_conf·c + k_sim·s + k_wrong·wrongness + k_abs·absurdity`` with ``pairs.hardness`` coefficients."""
    k = cfg.hardness
    return (k.confidence * confidence + k.similarity * similarity + k.wrongness * wrongness
            + k.absurdity * absurdity)


def raw_weight(cfg: PairsConfig, wrongness_r: float, c_r: float, c_c: float,
               norm_log_ppl_r: float) -> float:
    """``a·wrongness_r + b·max(0, c_r − c_c) + g·norm(log ppl_r)`` with ``pairs.weights`` coefficients."""
    k = cfg.weights
    return k.a * wrongness_r + k.b * max(0.0, c_r - c_c) + k.g * norm_log_ppl_r


def final_weights(cfg: PairsConfig, raws: Sequence[float]) -> list[tuple[float, bool]]:
    """(weight, clipped) per raw weight: ``(1 − λ) + λ·clip(w_raw / mean(w_raw), w_min, w_max)``."""
    if not raws:
        return []
    mean = sum(raws) / len(raws)
    out = []
    for r in raws:
        ratio = r / mean if mean > 0 else 1.0
        w = min(max(ratio, cfg.w_min), cfg.w_max)
        out.append(((1.0 - cfg.lam) + cfg.lam * w, w != ratio))
    return out


def _problem_map(problems: Mapping[str, Problem] | Iterable[Problem]) -> dict[str, Problem]:
    if isinstance(problems, Mapping):
        return dict(problems)
    return {p.id: p for p in problems}


def _draw(seed: int, problem_id: str, items: Sequence[Candidate], k: int) -> list[Candidate]:
    rng = random.Random(f"{seed}:{problem_id}")
    return rng.sample(list(items), min(k, len(items)))


def build_pairs(
    problems: Mapping[str, Problem] | Iterable[Problem],
    samples: Sequence[Sample],
    verdicts: Sequence[Verdict],
    cfg: PairsConfig,
    strategy: str,
    similarity_fn: SimilarityFn,
) -> tuple[list[Pair], dict[str, Any]]:
    """Pairs and statistics for one run (rules in the module docstring); never raises on zero pairs.

    ``problems`` (a list or id -> Problem) fixes the output order; a sample whose problem is not there
    is an error. ``verdicts`` are joined to samples on ``(problem_id, index)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairs strategy {strategy!r}; expected one of {STRATEGIES}")
    probs = _problem_map(problems)
    by_problem: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.problem_id not in probs:
            raise ValueError(f"sample (problem_id={s.problem_id!r}, index={s.index}) has no problem in the "
                             f"pool ({len(probs)} problems)")
        by_problem[s.problem_id].append(s)
    verdict_of = {(v.problem_id, v.index): v for v in verdicts}
    sample_keys = {(s.problem_id, s.index) for s in samples}

    count: Counter[str] = Counter()
    count["verdicts_without_sample"] = sum(1 for k in verdict_of if k not in sample_keys)
    all_incorrect_log_ppl: list[float] = []
    drafts: list[tuple[Problem, Candidate, Candidate, float, float]] = []  # problem, chosen, rejected, sim, h

    for pid, problem in probs.items():
        group = sorted(by_problem.get(pid, []), key=lambda s: s.index)
        if not group:
            count["skipped_no_samples"] += 1
            continue
        finite = [s.logprob_mean for s in group if math.isfinite(s.logprob_mean)]
        floor = min(finite) if finite else cfg.fallback_logprob_mean
        cands: list[Candidate] = []
        for s in group:
            lp = s.logprob_mean
            if not math.isfinite(lp):
                count["nonfinite_logprobs"] += 1
                lp = floor
            v = verdict_of.get((pid, s.index))
            if v is None:
                count["samples_missing_verdict"] += 1
                continue
            if v.status in FAILED_STATUSES or not (math.isfinite(v.wrongness) and math.isfinite(v.absurdity)):
                count["samples_unverified"] += 1
                continue
            cands.append(Candidate(s.index, s.text, min(lp, 0.0), v.correct, v.wrongness, v.absurdity))
        if not cands:
            count["skipped_no_verdicts"] += 1
            continue
        correct = [c for c in cands if c.correct]
        incorrect = [c for c in cands if not c.correct]
        all_incorrect_log_ppl += [c.log_ppl for c in incorrect]
        if not incorrect:
            count["skipped_all_correct"] += 1
            continue
        if correct:
            chosen = min(correct, key=lambda c: (c.wrongness, -c.confidence, c.index))
            positives = correct
        else:
            count["problems_all_incorrect"] += 1
            if not (cfg.fallback_to_reference and problem.solution and problem.solution.strip()):
                count["skipped_all_incorrect"] += 1
                continue
            mean_c = sum(c.confidence for c in cands) / len(cands)
            chosen = Candidate(None, problem.solution, math.log(mean_c), True, 0.0, 0.0)
            positives = [chosen]
            count["problems_reference_chosen"] += 1
        seen = {chosen.text.strip()}
        unique: list[Candidate] = []
        for c in incorrect:
            if c.text.strip() in seen:
                count["duplicates_removed"] += 1
                continue
            seen.add(c.text.strip())
            unique.append(c)
        if not unique:
            count["skipped_all_duplicates"] += 1
            continue
        scored = []
        for c in unique:
            sim = max(float(similarity_fn(c.text, p.text)) for p in positives)
            scored.append((c, sim, hardness(cfg, c.confidence, sim, c.wrongness, c.absurdity)))
        if strategy == "random":
            picked_ids = {c.index for c in _draw(cfg.seed, pid, unique, cfg.per_problem)}
            picked = [t for t in scored if t[0].index in picked_ids]
        else:
            picked = sorted(scored, key=lambda t: (-t[2], t[0].index))[: cfg.per_problem]
        for c, sim, h in picked:
            drafts.append((problem, chosen, c, sim, h))

    lo = min(all_incorrect_log_ppl, default=0.0)
    hi = max(all_incorrect_log_ppl, default=0.0)

    def norm(x: float) -> float:
        return (x - lo) / (hi - lo) if hi > lo else 0.0

    raws = [raw_weight(cfg, r.wrongness, r.confidence, c.confidence, norm(r.log_ppl))
            for _, c, r, _, _ in drafts]
    if strategy == "weighted":
        weights = final_weights(cfg, raws)
    else:
        weights = [(1.0, False)] * len(drafts)
    pairs = [
        Pair(problem_id=p.id, prompt=p.question, chosen=c.text, rejected=r.text, weight=w, strategy=strategy,
             chosen_index=c.index, rejected_index=r.index, confidence_chosen=c.confidence,
             confidence_rejected=r.confidence, similarity=sim, wrongness=r.wrongness, absurdity=r.absurdity,
             perplexity=r.perplexity, hardness=h, weight_raw=raw, clipped=clipped)
        for (p, c, r, sim, h), raw, (w, clipped) in zip(drafts, raws, weights, strict=True)
    ]
    return pairs, _stats(strategy, probs, samples, pairs, count, cfg)


def _stats(strategy: str, probs: Mapping[str, Problem], samples: Sequence[Sample], pairs: Sequence[Pair],
           count: Counter[str], cfg: PairsConfig) -> dict[str, Any]:
    per_problem = Counter(p.problem_id for p in pairs)
    ws = [p.weight for p in pairs]

    def agg(xs: list[float], fn) -> float:
        return float(fn(xs)) if xs else float("nan")

    keys = ("skipped_no_samples", "skipped_no_verdicts", "skipped_all_correct", "skipped_all_incorrect",
            "skipped_all_duplicates", "problems_all_incorrect", "problems_reference_chosen",
            "samples_missing_verdict", "samples_unverified", "verdicts_without_sample", "duplicates_removed",
            "nonfinite_logprobs")
    return {
        "strategy": strategy,
        "n_problems": len(probs),
        "n_samples": len(samples),
        "n_pairs": len(pairs),
        "problems_with_pairs": len(per_problem),
        "pairs_per_problem_mean": (len(pairs) / len(per_problem)) if per_problem else 0.0,
        "pairs_per_problem_max": max(per_problem.values(), default=0),
        **{k: count.get(k, 0) for k in keys},
        "weight_mean": agg(ws, statistics.fmean),
        "weight_std": agg(ws, statistics.pstdev),
        "weight_min": agg(ws, min),
        "weight_max": agg(ws, max),
        "weight_raw_mean": agg([p.weight_raw for p in pairs], statistics.fmean),
        "clipped": sum(p.clipped for p in pairs),
        "hardness_mean": agg([p.hardness for p in pairs], statistics.fmean),
        "similarity_mean": agg([p.similarity for p in pairs], statistics.fmean),
        "wrongness_mean": agg([p.wrongness for p in pairs], statistics.fmean),
        "lam": cfg.lam,
    }


def no_pairs_message(stats: Mapping[str, Any], cfg: PairsConfig) -> str:
    """Why a run gave no pair, from :func:`build_pairs` stats."""
    return (
        f"no preference pairs (strategy={stats['strategy']}) from {stats['n_problems']} problems and "
        f"{stats['n_samples']} samples: {stats['skipped_all_correct']} problems had only correct samples, "
        f"{stats['skipped_all_incorrect']} only incorrect samples and no usable reference "
        f"(pairs.fallback_to_reference={cfg.fallback_to_reference}), {stats['skipped_no_samples']} had no "
        f"samples, {stats['skipped_no_verdicts']} had no usable verdict ({stats['samples_missing_verdict']} "
        f"samples without a verdict, {stats['samples_unverified']} with an error/timeout verdict), "
        f"{stats['skipped_all_duplicates']} had only negatives identical to the chosen"
    )


def read_verdicts(path: str | Path) -> list[Verdict]:
    """``verdicts.jsonl`` rows; null (non-finite) scores are read as NaN, errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verdict file not found: {path}")
    out = []
    for line_no, row in enumerate(iter_jsonl(path), start=1):
        for key in ("wrongness", "absurdity"):
            if isinstance(row, dict) and row.get(key, 0.0) is None:
                row[key] = float("nan")
        try:
            out.append(Verdict.model_validate(row))
        except ValidationError as e:
            raise ValueError(f"{path}: line {line_no} is not a valid Verdict: {e}") from None
    return out


def plot_weights(pairs: Sequence[Pair], path: str | Path) -> Path:
    """Histogram of the final weights (and of ``w_raw / mean(w_raw)`` before clipping and λ)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    raws = [p.weight_raw for p in pairs]
    mean = sum(raws) / len(raws) if raws else 0.0
    if mean > 0:
        ax.hist([r / mean for r in raws], bins=30, alpha=0.4, color="tab:gray", label="w_raw / mean")
    ax.hist([p.weight for p in pairs], bins=30, alpha=0.8, color="tab:blue", label="final weight")
    clipped = sum(p.clipped for p in pairs)
    strategy = pairs[0].strategy if pairs else "?"
    ax.set_title(f"pair weights ({strategy}), n={len(pairs)}, clipped={clipped}")
    ax.set_xlabel("weight")
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


def plot_hardness(pairs: Sequence[Pair], path: str | Path) -> Path:
    """Scatter of hardness vs wrongness of the rejected, coloured by weight."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    sc = ax.scatter([p.wrongness for p in pairs], [p.hardness for p in pairs],
                    c=[p.weight for p in pairs], cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="weight")
    ax.set_xlabel("wrongness of the rejected")
    ax.set_ylabel("hardness")
    ax.set_title(f"hard negatives, n={len(pairs)}")
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


def run_pairs(cfg, strategy: str, sample_dir: Path, verify_dir: Path, data_dir: Path, out: Path,
              similarity_fn: SimilarityFn | None = None) -> dict[str, Any]:
    """Stage function (see docs/stages.md): writes pairs, stats and plots; returns the stats.

    ``similarity_fn`` defaults to ``MathVerifier(cfg.verify).similarity``: the verifier's semantic channel
    (the embedding model of ``verify.embedding_model`` when set, else ``verifier.similarity``, lexical).
    Raises :class:`NoPairsError` on zero pairs.
    """
    if similarity_fn is None:
        from verifier import MathVerifier

        similarity_fn = MathVerifier(cfg.verify).similarity
    samples = read_samples(sample_dir)
    verdicts = read_verdicts(Path(verify_dir) / "verdicts.jsonl")
    problems = read_problems(data_dir)
    pairs, stats = build_pairs(problems, samples, verdicts, cfg.pairs, strategy, similarity_fn)
    if not pairs:
        raise NoPairsError(no_pairs_message(stats, cfg.pairs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "pairs.jsonl", pairs)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    plot_weights(pairs, out / "weights.png")
    plot_hardness(pairs, out / "hardness.png")
    return stats
