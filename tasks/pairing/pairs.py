"""(Sound chosen, hard negative) preference pairs with importance weights: the pairs stage's library.

Pure core :func:`build_pairs` (tested directly on hand-made inputs); the stage (``tasks/pairs.py``)
reads the sample, verify and data folders and writes ``pairs.jsonl``, ``stats.json``, ``weights.png``
and ``hardness.png``. One row of ``pairs.jsonl``::

    {"problem_id": "gsm8k_train-17", "prompt": "Natalia sold clips to ...\nPlease reason step by step, ...",
     "chosen": "... \\boxed{72}", "rejected": "... \\boxed{96}", "weight": 1.09, "strategy": "weighted",
     "chosen_index": 2, "rejected_index": 5, "rejected_kind": "incorrect", "chosen_sound": true,
     "confidence_chosen": 0.74, "confidence_rejected": 0.81, "confidence_chosen_source": "sample",
     "similarity": 0.83, "wrongness": 0.46, "process_wrongness": 0.23, "absurdity": 0.09, "perplexity": 1.23,
     "logprob_gap": 0.09, "hardness": 1.78, "weight_raw": 0.86, "clipped": false}

docs/method.md gives the reasoning; the rules (coefficients in ``conf.schema.PairsConfig``):

* ``prompt`` is the exact user turn the sample stage used (its ``prompts.jsonl``), so DPO trains on
  the prompt the model is sampled and evaluated with.
* Kinds of sample. ``lp`` = the sample's ``logprob_mean`` (clamped to <= 0; NaN/inf replaced by the least
  confident finite ``lp`` of the problem, or ``pairs.fallback_logprob_mean``; counted), confidence
  ``c = exp(lp)``. Samples with an ``error``/``timeout`` verdict or none are left out and counted.
  - ``degenerate``: ``Verdict.degenerate`` is set (truncated, looping, no stated answer);
  - ``sound``: correct and sound by ``pairs.soundness`` (default: no erroneous step, i.e.
    ``first_error_step`` is null);
  - ``unsound``: correct, not sound (a right answer reached through a flagged step);
  - ``incorrect``: a wrong final answer.
  Positives (chosen candidates) are the sound samples (with ``soundness: answer_only``, every correct
  non-degenerate sample). Negatives are the kinds listed in ``pairs.negatives`` (default incorrect and
  unsound; degenerate ones only when listed). Degenerate samples are never chosen.
* Chosen: the positive with the lowest wrongness (ties: highest confidence, then lowest index); for
  ``random``, a positive drawn at random. With no positive and ``pairs.fallback_to_reference``, the
  problem's reference solution (already in the prompt's format, see the data stage) with the model's own
  log-probability of it (``references.jsonl`` of the sample stage; the mean ``lp`` of the problem's
  samples when that is missing, counted).
* Hardness of a negative r (each term in [0, 1], coefficients ``pairs.hardness``)::

      h_r = k_conf·c_r + k_sim·s_r + k_wrong·W_r + k_abs·absurdity_r

  ``s_r`` = the largest ``similarity_fn(text_r, text_p)`` over the positives p (the reference when it is
  the chosen), ``W_r`` the process wrongness (the wrongness aggregate without answer_correctness, which
  is the same 1 for every incorrect sample). Negatives with identical text (after stripping whitespace)
  count once; a negative identical to the chosen is dropped.
* Selection: ``weighted`` and ``uniform`` take the ``per_problem`` hardest (ties: lowest index);
  ``random`` and ``random_rejected`` draw ``per_problem`` negatives with
  ``random.Random(f"{seed}:{problem_id}")``, so the draw does not depend on the order of problems.
  ``random`` also draws its chosen response (the paper's random-pair baseline); ``random_rejected``
  keeps the verifier's chosen response.
* Weight (``weighted`` only; the others carry 1 and still report ``weight_raw``)::

      ranked:   w_raw = a·R(W_r) + b·R(lp_r − lp_c) + g·R(lp_r)
      original: w_raw = a·wrongness_r + b·max(0, c_r − c_c) + g·minmax(−lp_r)
      w = clip(w_raw / mean(w_raw), w_min, w_max);   weight = (1 − λ) + λ·w

  ``R`` is the mid-rank of a value among the run's selected pairs, scaled into (0, 1) (ties share a rank).
  Each ranked term grows with a more wrong, more confidently wrong negative, and none can be rescaled by
  one outlier. ``ranked`` then divides by the mean once more, so that the weights have mean 1 over the
  run after clipping (the DPO loss is the mean of ``w·ℓ``). ``original`` is the first implementation,
  kept as a named variant for the ablation (min-max over every incorrect candidate of the run).
* ``stats.json`` counts samples by kind, pairs by rejected kind, the share of pairs whose chosen is a
  reference, and the weight's distribution, each term's share of its variance
  (``Cov(term, w_raw) / Var(w_raw)``, summing to 1) and its Spearman correlation with the rejected's
  confidence and wrongness.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from conf.schema import PairsConfig, Strategy
from tasks.common.records import Pair, Problem, Sample, iter_jsonl, read_records
from tasks.generation.sampling import PROMPTS_FILE, REFERENCES_FILE
from tasks.verification.verdicts import FAILED_STATUSES
from verifier.verdict import DIMENSIONS, Verdict

STRATEGIES: tuple[str, ...] = get_args(Strategy)
MAX_LOG_PPL = 700.0  # exp(700) is still a finite float
TERMS = ("wrongness", "gap", "confidence")  # the weight's three terms, in formula order

SimilarityFn = Callable[[str, str], float]
PREFETCH_PROBLEMS = 128  # problems whose texts are embedded in one batch (bounded by the embedder's cache)


class NoPairsError(RuntimeError):
    """The run produced no preference pair; the message says why (counts per cause)."""


@dataclass(frozen=True)
class Candidate:
    """A solution of one problem with the features the pairing uses (``index`` None = reference)."""

    index: int | None
    text: str
    lp: float  # finite logprob_mean (after NaN/inf substitution and clamping to <= 0)
    kind: str  # sound | unsound | incorrect | degenerate | reference
    wrongness: float
    process_wrongness: float
    absurdity: float
    lp_source: str = "sample"
    flagged: bool = False  # the verifier found an erroneous step (first_error_step is set)

    @property
    def confidence(self) -> float:
        return math.exp(self.lp)

    @property
    def log_ppl(self) -> float:
        return min(-self.lp, MAX_LOG_PPL)

    @property
    def perplexity(self) -> float:
        return math.exp(self.log_ppl)


def process_wrongness(dims: Mapping[str, float], weights: object) -> float:
    """The wrongness aggregate over the five dimensions other than ``answer_correctness``."""
    names = [d for d in DIMENSIONS if d != "answer_correctness"]
    w = {d: float(weights.get(d, 0.0) if isinstance(weights, Mapping) else getattr(weights, d)) for d in names}
    total = sum(w.values())
    if total <= 0:
        return 0.0
    return sum(w[d] * float(dims.get(d, 0.0)) for d in names) / total


def classify(v: Verdict, cfg: PairsConfig, w_proc: float) -> str:
    """The kind of a verified sample: degenerate, sound, unsound or incorrect (module docstring)."""
    if v.degenerate is not None:
        return "degenerate"
    if not v.correct:
        return "incorrect"
    if cfg.soundness == "answer_only":
        return "sound"
    if cfg.soundness == "wrongness":
        return "sound" if w_proc <= cfg.sound_max_wrongness else "unsound"
    return "sound" if v.first_error_step is None else "unsound"


def hardness(cfg: PairsConfig, confidence: float, similarity: float, wrongness: float,
             absurdity: float) -> float:
    """``k_conf·c + k_sim·s + k_wrong·W + k_abs·absurdity`` with ``pairs.hardness`` coefficients."""
    k = cfg.hardness
    return (k.confidence * confidence + k.similarity * similarity + k.wrongness * wrongness
            + k.absurdity * absurdity)


def midranks(xs: Sequence[float]) -> list[float]:
    """Mid-ranks of ``xs`` scaled into (0, 1): ``(rank − 0.5) / n`` with ties sharing their mean rank."""
    n = len(xs)
    order = sorted(range(n), key=lambda i: xs[i])
    out = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1  # 1-based mean rank of the tie group
        for k in range(i, j + 1):
            out[order[k]] = (rank - 0.5) / n
        i = j + 1
    return out


def weight_terms(cfg: PairsConfig, drafts: Sequence[tuple[Candidate, Candidate]],
                 all_negative_log_ppl: Sequence[float]) -> list[tuple[float, float, float]]:
    """Per pair (chosen, rejected) the three coefficient-scaled terms of ``w_raw`` (module docstring)."""
    k = cfg.weights
    if k.formula == "original":
        lo, hi = min(all_negative_log_ppl, default=0.0), max(all_negative_log_ppl, default=0.0)

        def norm(x: float) -> float:
            return (x - lo) / (hi - lo) if hi > lo else 0.0

        return [(k.a * r.wrongness, k.b * max(0.0, r.confidence - c.confidence), k.g * norm(r.log_ppl))
                for c, r in drafts]
    wr = midranks([r.process_wrongness for _, r in drafts])
    gap = midranks([r.lp - c.lp for c, r in drafts])
    conf = midranks([r.lp for _, r in drafts])
    return [(k.a * a, k.b * b, k.g * g) for a, b, g in zip(wr, gap, conf, strict=True)]


def final_weights(cfg: PairsConfig, raws: Sequence[float]) -> list[tuple[float, bool]]:
    """(weight, clipped) per raw weight: ``(1 − λ) + λ·clip(w_raw / mean(w_raw), w_min, w_max)``; the
    ``ranked`` formula then rescales the clipped ratios to mean 1 (clipping moves the mean)."""
    if not raws:
        return []
    mean = sum(raws) / len(raws)
    ratios = [r / mean if mean > 0 else 1.0 for r in raws]
    clipped = [min(max(x, cfg.w_min), cfg.w_max) for x in ratios]
    if cfg.weights.formula == "ranked":
        m = sum(clipped) / len(clipped)
        clipped = [x / m for x in clipped]
    return [((1.0 - cfg.lam) + cfg.lam * w, min(max(x, cfg.w_min), cfg.w_max) != x)
            for w, x in zip(clipped, ratios, strict=True)]


def _problem_map(problems: Mapping[str, Problem] | Iterable[Problem]) -> dict[str, Problem]:
    if isinstance(problems, Mapping):
        return dict(problems)
    return {p.id: p for p in problems}


def _rng(seed: int, problem_id: str) -> random.Random:
    return random.Random(f"{seed}:{problem_id}")


def _candidates(pid: str, group: Sequence[Sample], verdict_of: Mapping, cfg: PairsConfig, wcfg: object,
                count: Counter) -> list[Candidate]:
    finite = [s.logprob_mean for s in group if math.isfinite(s.logprob_mean)]
    floor = min(finite) if finite else cfg.fallback_logprob_mean
    out = []
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
        w_proc = process_wrongness(v.dims, wcfg)
        kind = classify(v, cfg, w_proc)
        count[f"samples_{kind}"] += 1
        if kind == "degenerate":
            count[f"samples_degenerate_{v.degenerate}"] += 1
        out.append(Candidate(s.index, s.text, min(lp, 0.0), kind, v.wrongness, w_proc, v.absurdity,
                             flagged=v.first_error_step is not None))
    return out


@dataclass
class _Run:
    """What every problem of one :func:`build_pairs` run shares, and the counts it adds to."""

    cfg: PairsConfig
    strategy: str
    similarity_fn: SimilarityFn
    wrongness_weights: object
    references: Mapping[str, float]
    verdict_of: Mapping[tuple[str, int], Verdict]
    negative_kinds: set[str]
    count: Counter
    negative_log_ppl: list[float]  # of every negative candidate of the run (the ``original`` formula's range)


# (problem, chosen, rejected, similarity, hardness) of one selected pair, before its weight
Draft = tuple[Problem, Candidate, Candidate, float, float]


def _group_samples(samples: Sequence[Sample], probs: Mapping[str, Problem]) -> dict[str, list[Sample]]:
    by_problem: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.problem_id not in probs:
            raise ValueError(f"sample (problem_id={s.problem_id!r}, index={s.index}) has no problem in the "
                             f"pool ({len(probs)} problems)")
        by_problem[s.problem_id].append(s)
    return by_problem


def _choose(problem: Problem, positives: list[Candidate], cands: Sequence[Candidate], rng: random.Random,
            run: _Run) -> Candidate | None:
    """The chosen response: a positive (the least wrong, or for ``random`` a random one), else the reference
    (with the model's log-prob of it when known), else None (the problem is skipped)."""
    count = run.count
    if positives:
        if run.strategy == "random":
            return positives[rng.randrange(len(positives))]
        return min(positives, key=lambda c: (c.wrongness, -c.confidence, c.index))
    count["problems_without_sound_sample"] += 1
    if not (run.cfg.fallback_to_reference and problem.solution and problem.solution.strip()):
        count["skipped_no_sound_sample"] += 1
        return None
    ref_lp = run.references.get(problem.id)
    if ref_lp is not None and math.isfinite(ref_lp):
        lp, source = min(ref_lp, 0.0), "model"
    else:
        lp, source = math.log(sum(c.confidence for c in cands) / len(cands)), "mean"
        count["reference_confidence_unknown"] += 1
    count["problems_reference_chosen"] += 1
    return Candidate(None, problem.solution.strip(), lp, "reference", 0.0, 0.0, 0.0, source)


def _unique(chosen: Candidate, negatives: Sequence[Candidate], count: Counter) -> list[Candidate]:
    """Negatives with distinct texts (after stripping whitespace), none equal to the chosen's."""
    seen = {chosen.text.strip()}
    unique: list[Candidate] = []
    for c in negatives:
        if c.text.strip() in seen:
            count["duplicates_removed"] += 1
            continue
        seen.add(c.text.strip())
        unique.append(c)
    return unique


def _select(negatives: Sequence[Candidate], positives: Sequence[Candidate], rng: random.Random, run: _Run
            ) -> list[tuple[Candidate, float, float]]:
    """(negative, similarity, hardness) of the ``per_problem`` negatives the strategy takes."""
    cfg = run.cfg
    scored = []
    for c in negatives:
        sim = max(float(run.similarity_fn(c.text, p.text)) for p in positives)
        scored.append((c, sim, hardness(cfg, c.confidence, sim, c.process_wrongness, c.absurdity)))
    if run.strategy in ("random", "random_rejected"):
        picked = rng.sample(scored, min(cfg.per_problem, len(scored)))
        return sorted(picked, key=lambda t: t[0].index)
    return sorted(scored, key=lambda t: (-t[2], t[0].index))[: cfg.per_problem]


def _problem_drafts(problem: Problem, group: Sequence[Sample], run: _Run) -> list[Draft]:
    """The selected (chosen, rejected) drafts of one problem; a skipped problem is counted by why."""
    count = run.count
    if not group:
        count["skipped_no_samples"] += 1
        return []
    cands = _candidates(problem.id, group, run.verdict_of, run.cfg, run.wrongness_weights, count)
    if not cands:
        count["skipped_no_verdicts"] += 1
        return []
    positives = [c for c in cands if c.kind == "sound"]
    negatives = [c for c in cands if c.kind in run.negative_kinds]
    run.negative_log_ppl.extend(c.log_ppl for c in negatives)
    if not negatives:
        count["skipped_no_negatives"] += 1
        return []
    rng = _rng(run.cfg.seed, problem.id)
    chosen = _choose(problem, positives, cands, rng, run)
    if chosen is None:
        return []
    unique = _unique(chosen, negatives, count)
    if not unique:
        count["skipped_all_duplicates"] += 1
        return []
    return [(problem, chosen, c, sim, h) for c, sim, h in _select(unique, positives or [chosen], rng, run)]


def _weighted_pairs(drafts: Sequence[Draft], run: _Run, prompts: Mapping[str, str]
                    ) -> tuple[list[Pair], list[tuple[float, float, float]]]:
    """The pairs of ``drafts`` with their weights (``weighted`` only; others carry 1), and the weight terms."""
    cfg, strategy = run.cfg, run.strategy
    terms = weight_terms(cfg, [(c, r) for _, c, r, _, _ in drafts], run.negative_log_ppl)
    raws = [sum(t) for t in terms]
    weights = final_weights(cfg, raws) if strategy == "weighted" else [(1.0, False)] * len(drafts)
    pairs = [
        Pair(problem_id=p.id, prompt=prompts[p.id], chosen=c.text, rejected=r.text, weight=w, strategy=strategy,
             chosen_index=c.index, rejected_index=r.index, rejected_kind=r.kind, chosen_sound=not c.flagged,
             confidence_chosen=c.confidence, confidence_rejected=r.confidence,
             confidence_chosen_source=c.lp_source, similarity=sim, wrongness=r.wrongness,
             process_wrongness=r.process_wrongness, absurdity=r.absurdity, perplexity=r.perplexity,
             logprob_gap=r.lp - c.lp, hardness=h, weight_raw=raw, clipped=clipped)
        for (p, c, r, sim, h), raw, (w, clipped) in zip(drafts, raws, weights, strict=True)
    ]
    return pairs, terms


def build_pairs(
    problems: Mapping[str, Problem] | Iterable[Problem],
    samples: Sequence[Sample],
    verdicts: Sequence[Verdict],
    cfg: PairsConfig,
    strategy: str,
    similarity_fn: SimilarityFn,
    *,
    prompts: Mapping[str, str],
    references: Mapping[str, float] | None = None,
    wrongness_weights: object | None = None,
    prefetch: Callable[[list[str]], None] | None = None,
) -> tuple[list[Pair], dict[str, Any]]:
    """Pairs and statistics for one run (rules in the module docstring); never raises on zero pairs.

    ``problems`` (a list or id -> Problem) fixes the output order; a sample whose problem is not there
    is an error. ``verdicts`` are joined to samples on ``(problem_id, index)``. ``prompts`` maps each
    problem id to the user turn sampling used; ``references`` maps a problem id to the model's mean
    token log-probability of its reference solution; ``wrongness_weights`` are ``verify.wrongness`` (for
    the process wrongness; default the schema's). ``prefetch`` (e.g. ``MathVerifier.prefetch``) is handed
    the texts of each chunk of :data:`PREFETCH_PROBLEMS` problems before their similarities are asked for,
    so an embedding model encodes them in batches; it must not change what ``similarity_fn`` returns.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairs strategy {strategy!r}; expected one of {STRATEGIES}")
    if wrongness_weights is None:
        from conf.schema import DimensionWeights

        wrongness_weights = DimensionWeights()
    probs = _problem_map(problems)
    missing = [pid for pid in probs if pid not in prompts]
    if missing:
        raise ValueError(f"no sampling prompt for {len(missing)} problems (e.g. {missing[:3]}): the sample "
                         f"stage's {PROMPTS_FILE} and the pool disagree")
    by_problem = _group_samples(samples, probs)
    verdict_of = {(v.problem_id, v.index): v for v in verdicts}
    sample_keys = {(s.problem_id, s.index) for s in samples}
    count: Counter[str] = Counter()
    count["verdicts_without_sample"] = sum(1 for k in verdict_of if k not in sample_keys)
    run = _Run(cfg, strategy, similarity_fn, wrongness_weights, references or {}, verdict_of,
               set(cfg.negatives) - ({"unsound"} if cfg.soundness == "answer_only" else set()), count, [])
    drafts: list[Draft] = []
    items = list(probs.items())
    for start in range(0, len(items), PREFETCH_PROBLEMS):
        chunk = items[start:start + PREFETCH_PROBLEMS]
        if prefetch is not None:  # one batched embedding call per chunk, not one encode per pair
            prefetch([t for pid, problem in chunk
                      for t in [problem.solution or ""] + [s.text for s in by_problem.get(pid, [])]])
        for pid, problem in chunk:
            drafts.extend(_problem_drafts(problem, sorted(by_problem.get(pid, []), key=lambda s: s.index), run))
    pairs, terms = _weighted_pairs(drafts, run, prompts)
    return pairs, _stats(strategy, probs, samples, pairs, terms, count, cfg)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on mid-ranks); NaN when either side is constant or short."""
    if len(xs) < 2:
        return float("nan")
    return pearson(midranks(xs), midranks(ys))


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def variance_shares(terms: Sequence[Sequence[float]]) -> dict[str, float]:
    """Each term's share of the variance of their sum, ``Cov(t_k, Σ t) / Var(Σ t)`` (NaN if constant)."""
    if len(terms) < 2:
        return dict.fromkeys(TERMS, float("nan"))
    total = [sum(t) for t in terms]
    mt = statistics.fmean(total)
    var = sum((x - mt) ** 2 for x in total)
    out = {}
    for k, name in enumerate(TERMS):
        col = [t[k] for t in terms]
        mc = statistics.fmean(col)
        cov = sum((a - mc) * (b - mt) for a, b in zip(col, total, strict=True))
        out[name] = cov / var if var > 0 else float("nan")
    return out


COUNT_KEYS = ("skipped_no_samples", "skipped_no_verdicts", "skipped_no_negatives", "skipped_no_sound_sample",
              "skipped_all_duplicates", "problems_without_sound_sample", "problems_reference_chosen",
              "reference_confidence_unknown", "samples_missing_verdict", "samples_unverified",
              "verdicts_without_sample", "duplicates_removed", "nonfinite_logprobs", "samples_sound",
              "samples_unsound", "samples_incorrect", "samples_degenerate", "samples_degenerate_truncated",
              "samples_degenerate_looping", "samples_degenerate_no_answer")


def _stats(strategy: str, probs: Mapping[str, Problem], samples: Sequence[Sample], pairs: Sequence[Pair],
           terms: Sequence[Sequence[float]], count: Counter[str], cfg: PairsConfig) -> dict[str, Any]:
    per_problem = Counter(p.problem_id for p in pairs)
    ws = [p.weight for p in pairs]
    n = len(pairs)

    def agg(xs: list[float], fn) -> float:
        return float(fn(xs)) if xs else float("nan")

    shares = variance_shares(terms)
    kinds = Counter(p.rejected_kind for p in pairs)
    return {
        "strategy": strategy,
        "weight_formula": cfg.weights.formula,
        "soundness": cfg.soundness,
        "negatives": list(cfg.negatives),
        "n_problems": len(probs),
        "n_samples": len(samples),
        "n_pairs": n,
        "problems_with_pairs": len(per_problem),
        "pairs_per_problem_mean": (n / len(per_problem)) if per_problem else 0.0,
        "pairs_per_problem_max": max(per_problem.values(), default=0),
        **{k: count.get(k, 0) for k in COUNT_KEYS},
        **{f"pairs_rejected_{k}": kinds.get(k, 0) for k in ("incorrect", "unsound", "degenerate")},
        "pairs_reference_chosen": sum(p.chosen_index is None for p in pairs),
        "share_chosen_sound": (sum(p.chosen_sound for p in pairs) / n) if n else float("nan"),
        "share_reference_chosen": (sum(p.chosen_index is None for p in pairs) / n) if n else float("nan"),
        "weight_mean": agg(ws, statistics.fmean),
        "weight_std": agg(ws, statistics.pstdev),
        "weight_min": agg(ws, min),
        "weight_max": agg(ws, max),
        "weight_raw_mean": agg([p.weight_raw for p in pairs], statistics.fmean),
        "clipped": sum(p.clipped for p in pairs),
        "clipped_share": (sum(p.clipped for p in pairs) / n) if n else float("nan"),
        **{f"weight_share_{k}": v for k, v in shares.items()},
        "weight_spearman_confidence": spearman([p.weight_raw for p in pairs], [p.confidence_rejected for p in pairs]),
        "weight_spearman_wrongness": spearman([p.weight_raw for p in pairs], [p.wrongness for p in pairs]),
        "weight_spearman_process_wrongness": spearman([p.weight_raw for p in pairs],
                                                      [p.process_wrongness for p in pairs]),
        "hardness_mean": agg([p.hardness for p in pairs], statistics.fmean),
        "similarity_mean": agg([p.similarity for p in pairs], statistics.fmean),
        "wrongness_mean": agg([p.wrongness for p in pairs], statistics.fmean),
        "confidence_rejected_mean": agg([p.confidence_rejected for p in pairs], statistics.fmean),
        "lam": cfg.lam,
    }


def no_pairs_message(stats: Mapping[str, Any], cfg: PairsConfig) -> str:
    """Why a run gave no pair, from :func:`build_pairs` stats."""
    return (
        f"no preference pairs (strategy={stats['strategy']}) from {stats['n_problems']} problems and "
        f"{stats['n_samples']} samples: {stats['skipped_no_negatives']} problems had no negative of the kinds "
        f"{list(cfg.negatives)}, {stats['skipped_no_sound_sample']} no sound correct sample and no usable "
        f"reference (pairs.fallback_to_reference={cfg.fallback_to_reference}), {stats['skipped_no_samples']} had "
        f"no samples, {stats['skipped_no_verdicts']} had no usable verdict ({stats['samples_missing_verdict']} "
        f"samples without a verdict, {stats['samples_unverified']} with an error/timeout verdict), "
        f"{stats['skipped_all_duplicates']} had only negatives identical to the chosen"
    )


def read_prompts(sample_dir: str | Path) -> dict[str, str]:
    """``prompts.jsonl`` of the sample stage: problem id -> the user turn it sampled with."""
    path = Path(sample_dir) / PROMPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the sample stage records the user turn of every problem "
                                "there (re-run the sample stage)")
    return {row["problem_id"]: row["prompt"] for row in iter_jsonl(path)}


def read_references(sample_dir: str | Path) -> dict[str, float]:
    """``references.jsonl`` of the sample stage (problem id -> mean token log-prob); empty when absent."""
    path = Path(sample_dir) / REFERENCES_FILE
    if not path.is_file():
        return {}
    out = {}
    for row in iter_jsonl(path):
        lp = row.get("logprob_mean")
        out[row["problem_id"]] = float("nan") if lp is None else float(lp)
    return out


def read_verdicts(path: str | Path) -> list[Verdict]:
    """``verdicts.jsonl`` rows; null (non-finite) scores are read as NaN, errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verdict file not found: {path}")

    def nan_scores(row: Any) -> Any:
        for key in ("wrongness", "absurdity"):
            if isinstance(row, dict) and row.get(key, 0.0) is None:
                row[key] = float("nan")
        return row

    return read_records(path, Verdict, prepare=nan_scores)


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


