"""The ablation report: DPO arms × seeds against the SFT model on one held-out test set.

An *arm* is one DPO configuration (``random``: a random sound chosen and a random negative, w = 1; ``uniform``: hard
negatives, w = 1; ``weighted-<λ>``: hard negatives with importance weights tempered by λ), trained with
several ``dpo.seed`` s. Pure core :func:`build_ablation_report` takes per-problem correctness and pair
features and returns JSON-able data; :func:`render_markdown` and :func:`plot_ablation` turn it into
``ablation.md`` and ``ablation.png``; :func:`run_ablation_report` is the shell that reads the evaluate,
pairs, verify and data folders (and runs the verifier on the SFT model's evaluation outputs).

What the report holds (all computed, nothing hand-written):

* **Accuracy per arm**: the mean over seeds of each seed's accuracy, with a 95% interval *over seeds*
  (Student t on the seed accuracies; none with one seed) and *over problems* (percentile bootstrap of
  the per-problem accuracy averaged over seeds, ``tasks.evaluation.stats.bootstrap_mean``).
* **Paired differences** (every arm − SFT, every other arm − ``random``): Δ in accuracy with the
  bootstrap interval over problems (per-problem differences of seed-averaged correctness, problems kept
  paired), the t interval over seeds (seed s of the arm against seed s of the comparator, or against the
  single SFT model), how many seeds favour the arm, and McNemar's exact test on the pooled
  (problem, seed) pairs (each seed a replicate; the p-value of every seed alone is listed beside it).
* **Sound accuracy** (``ablation.json["sound"]``): the same arm rows and paired comparisons on the
  per-problem *sound* correctness of the evaluate records (exact on synthetic sets, verifier-judged
  elsewhere), when every record has it.
* **Breakdowns**: accuracy by difficulty (``Problem.meta["n_steps"]``) and by what the SFT model did on
  the problem: its final answer (``correct``, ``near_miss`` = within ``max(near_miss_abs,
  near_miss_rel·|gold|)``, ``far_off``, ``no_answer``) and the verifier's reading of its error
  (``arithmetic`` = a wrong calculation, ``symbolic_validity > 0``; ``structural`` = wrong without one).
* **Weights** of each arm's pairs: distribution (mean, std, quantiles, clipped share) and Pearson /
  Spearman correlations of the weight with the pair features of ``pairs.jsonl`` and the rejected
  solution's six verifier dimensions (joined from ``verdicts.jsonl``).
* **Reading**: whether the paper's ordering (primary weighted arm > ``random`` and > SFT) holds, from the
  signs, intervals and p-values; diagnostics (verifier's arithmetic flag against the *known* slips of
  the synthetic problems, degenerate weights, whether random DPO degrades SFT).

One row of ``ablation.json["arms"]``::

    {"arm": "weighted-0.3", "strategy": "weighted", "lam": 0.3, "seeds": [0, 1, 2],
     "per_seed": [0.412, 0.398, 0.42], "accuracy": 0.41, "seed_low": 0.382, "seed_high": 0.438,
     "problem_low": 0.372, "problem_high": 0.449, "n": 500}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from conf.schema import AblationConfig, EvaluateConfig
from tasks.analysis.ablation_rows import (
    AblationReport,
    ArmRow,
    Comparison,
    Correlation,
    ErrorGroupRow,
    ErrorTypeRow,
    ErrorTypes,
    GroupRow,
    PoolSummary,
    Reading,
    VerifierCheck,
    WeightSummary,
)
from tasks.common.provenance import git_commit
from tasks.common.records import Pair, Problem
from tasks.corpus.synthetic import ERROR_KINDS as SYNTHETIC_ERROR_KINDS
from tasks.corpus.synthetic import STRUCTURAL_KINDS, known_error
from tasks.evaluation.grading import calculation_holds, stated_calculations
from tasks.evaluation.report import format_p
from tasks.evaluation.stats import bootstrap_mean, mcnemar, minimal_detectable_effect
from verifier.answers import parse_number
from verifier.verdict import DIMENSIONS, Verdict

DASH = "—"
_ABLATION = AblationConfig.model_fields
_EVALUATE = EvaluateConfig.model_fields
SFT = "sft"
ANSWER_KINDS = ("correct", "near_miss", "far_off", "no_answer")
ERROR_KINDS = ("correct", "arithmetic", "structural")
KNOWN_TYPES = ("correct", *SYNTHETIC_ERROR_KINDS)
PAIR_FEATURES = ("weight_raw", "wrongness", "absurdity", "confidence_rejected", "confidence_gap",
                 "log_perplexity", "similarity", "hardness")
FEATURES = PAIR_FEATURES + DIMENSIONS


class AblationError(ValueError):
    """Inputs of the ablation report that do not fit together; the message names the arm/seed/file."""


# ---------------------------------------------------------------- classifying the SFT model's errors

_ANNOT_RE = re.compile(r"<<[^<>]*?=\s*(-?\d+(?:\.\d+)?)\s*>>\s*(-?\d+(?:\.\d+)?)(?![\d.])")


def known_arithmetic_slip(text: str) -> bool:
    """Whether ``text`` states a wrong calculation: ``a op b = r`` (``tasks.evaluation.grading.stated_calculations``)
    with ``r`` not the result, or a GSM8K annotation ``<<…=r>>s`` whose shown value ``s`` differs from ``r``.

    Computed from the text alone, without the verifier (the fallback ground truth where the generator's
    :func:`tasks.corpus.synthetic.known_error` does not apply):

    >>> known_arithmetic_slip("12+18 = <<12+18=30>>30 shells"), known_arithmetic_slip("12+18 = <<12+18=31>>31")
    (False, True)
    """
    if any(not calculation_holds(*calc) for calc in stated_calculations(text or "")):
        return True
    return any(Fraction(r) != Fraction(s) for r, s in _ANNOT_RE.findall(text or ""))


def known_type(problem: Problem | None, record: Mapping[str, Any]) -> str | None:
    """The generator's type of one graded output's error on a synthetic problem: ``correct`` or one of
    :data:`tasks.corpus.synthetic.ERROR_KINDS` (a trap's type, ``arithmetic``, ``other_structural``,
    ``no_answer``); None for a problem without the generator's ``meta`` (real data)."""
    if problem is None or not problem.meta.get("values"):
        return None
    if record["correct"]:
        return "correct"
    kind = known_error(problem.meta, record["gold"], record.get("extracted"),
                       stated_calculations(record.get("output", "")))
    return "other_structural" if kind == "correct" else kind  # graded wrong although the number matches


def coarse_known(kind: str | None, output: str) -> str:
    """``correct`` | ``arithmetic`` | ``structural`` from :func:`known_type` (every trap, ``other_structural``
    and ``no_answer`` are structural), or from :func:`known_arithmetic_slip` where the type is unknown."""
    if kind is None:
        return "arithmetic" if known_arithmetic_slip(output) else "structural"
    return kind if kind in ("correct", "arithmetic") else "structural"


def answer_kind(extracted: str | None, gold: str, correct: bool, *,
                rel: float = _ABLATION["near_miss_rel"].default,
                abs_tol: float = _ABLATION["near_miss_abs"].default) -> str:
    """``correct`` | ``near_miss`` | ``far_off`` | ``no_answer`` for one graded output.

    A wrong numeric answer is a near miss when ``|answer − gold| <= max(abs_tol, rel·|gold|)``; a wrong
    answer that is not a number (or a gold that is not) is far off.

    >>> answer_kind("41", "40", False), answer_kind("90", "40", False), answer_kind(None, "40", False)
    ('near_miss', 'far_off', 'no_answer')
    """
    if correct:
        return "correct"
    if extracted is None or not str(extracted).strip():
        return "no_answer"
    p, g = parse_number(str(extracted)), parse_number(gold)
    if p is None or g is None:
        return "far_off"
    try:
        pv, gv = float(p[0]), float(g[0])
    except (OverflowError, TypeError, ValueError):
        return "far_off"
    if not (math.isfinite(pv) and math.isfinite(gv)):
        return "far_off"
    return "near_miss" if abs(pv - gv) <= max(abs_tol, rel * abs(gv)) else "far_off"


def error_kind(correct: bool, dims: Mapping[str, float] | None) -> str:
    """``correct`` | ``arithmetic`` (the verifier found a wrong calculation) | ``structural`` (wrong
    without one: structure, ordering, logic, or an unexplained wrong answer)."""
    if correct:
        return "correct"
    if dims is not None and float(dims.get("symbolic_validity", 0.0) or 0.0) > 0:
        return "arithmetic"
    return "structural"


def classify_sft(records: Sequence[Mapping[str, Any]], verdicts: Mapping[str, Verdict],
                 problems: Mapping[str, Problem] | None = None, *, rel: float = _ABLATION["near_miss_rel"].default,
                 abs_tol: float = _ABLATION["near_miss_abs"].default) -> dict[str, dict[str, Any]]:
    """Problem id -> ``{"answer", "error", "known", "known_type", "verifier_correct"}`` for the SFT model's
    graded outputs (``tasks.evaluation.grading.Graded`` rows as dicts). ``known_type`` is the generator's
    error type (:func:`known_type`, None without ``problems`` or on real data) and ``known`` its coarse
    ground-truth split (:func:`coarse_known`: ``arithmetic`` | ``structural`` | ``correct``)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        pid, correct = r["id"], bool(r["correct"])
        v = verdicts.get(pid)
        kind = known_type((problems or {}).get(pid), r)
        out[pid] = {"answer": answer_kind(r.get("extracted"), r["gold"], correct, rel=rel, abs_tol=abs_tol),
                    "error": error_kind(correct, v.dims if v is not None and v.status == "ok" else None),
                    "known": "correct" if correct else coarse_known(kind, r.get("output", "")), "known_type": kind,
                    "verifier_correct": None if v is None else bool(v.correct)}
    return out


# ---------------------------------------------------------------- statistics helpers


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): Student-t interval of the mean; low = high = None with fewer than two values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None, None, None
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, None, None
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, arr.size - 1)) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def _clip01(x: float | None) -> float | None:
    return None if x is None else min(1.0, max(0.0, x))


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Pearson and Spearman correlation over the finite pairs; None when either side is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"pearson": None, "spearman": None, "n": int(a.size)}
    from scipy.stats import rankdata

    pearson = float(np.corrcoef(a, b)[0, 1])
    spearman = float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
    return {"pearson": pearson, "spearman": spearman, "n": int(a.size)}


# ---------------------------------------------------------------- the pure core


@dataclass(frozen=True)
class AblationData:
    """What one report is computed from.

    ``problems``: the test set (ids, ``meta["n_steps"]``); ``sft``: id -> correct of the SFT model;
    ``arms``: arm -> seed -> id -> correct; ``arm_meta``: arm -> ``{"strategy", "lam"}``; ``sft_kinds``:
    :func:`classify_sft`; ``pairs``: arm -> its pairs; ``rejected_dims``: (problem id, sample index) -> the
    six dims of that sample's verdict.
    """

    problems: Sequence[Problem]
    sft: Mapping[str, bool]
    arms: Mapping[str, Mapping[int, Mapping[str, bool]]]
    arm_meta: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sft_kinds: Mapping[str, Mapping[str, Any]] | None = None
    pairs: Mapping[str, Sequence[Pair]] | None = None
    rejected_dims: Mapping[tuple[str, int], Mapping[str, float]] = field(default_factory=dict)
    pool: PoolSummary | None = None


@dataclass(frozen=True)
class ReportSettings:
    """How the report tests and reads (defaults: ``conf.schema.AblationConfig`` / ``EvaluateConfig``)."""

    primary: str = _ABLATION["primary"].default
    random_arm: str = _ABLATION["random_arm"].default
    uniform_arm: str = _ABLATION["uniform_arm"].default
    samples: int = _EVALUATE["bootstrap_samples"].default
    seed: int = _EVALUATE["seed"].default
    level: float = 0.95
    alpha: float = _ABLATION["alpha"].default
    power: float = 0.8  # of the minimal detectable effect printed beside every comparison
    degenerate_std: float = 0.05  # an arm's weights with a smaller std barely differ from uniform
    degenerate_clipped: float = 0.5  # ... or with a larger clipped share are dominated by clipping

    @classmethod
    def of(cls, cfg) -> ReportSettings:
        """The settings of a profile (its ``ablation`` section, or the schema's defaults)."""
        ab = getattr(cfg, "ablation", None) or AblationConfig()
        return cls(primary=ab.primary, random_arm=ab.random_arm, uniform_arm=ab.uniform_arm,
                   samples=cfg.evaluate.bootstrap_samples,
                   seed=cfg.evaluate.seed, alpha=ab.alpha)


def _vector(correct: Mapping[str, bool], ids: Sequence[str], where: str) -> np.ndarray:
    missing = [i for i in ids if i not in correct]
    if missing:
        raise AblationError(f"{where}: no result for {len(missing)} test problem(s), e.g. {missing[:3]}")
    return np.array([bool(correct[i]) for i in ids], dtype=bool)


def _arm_row(arm: str, meta: Mapping[str, Any], vecs: Mapping[int, np.ndarray], s: ReportSettings) -> ArmRow:
    seeds = sorted(vecs)
    per_seed = [float(vecs[x].mean()) for x in seeds]
    mean, lo, hi = t_interval(per_seed, s.level)
    per_problem = np.mean([vecs[x] for x in seeds], axis=0)
    est = bootstrap_mean(per_problem, samples=s.samples, seed=s.seed, level=s.level)
    return ArmRow(arm=arm, strategy=meta.get("strategy"), lam=meta.get("lam"), seeds=seeds, per_seed=per_seed,
                  accuracy=mean, seed_low=_clip01(lo), seed_high=_clip01(hi), problem_low=_num(est.low),
                  problem_high=_num(est.high), n=int(per_problem.size))


def _reading(diff: float, low: float | None, high: float | None, p: float, alpha: float) -> str:
    """``holds`` (better, CI above 0 and p < alpha) | ``better, not significant`` | ``worse, not
    significant`` | ``worse`` (CI below 0 and p < alpha) | ``no difference``."""
    if diff > 0:
        return "holds" if (low is not None and low > 0 and p < alpha) else "better, not significant"
    if diff < 0:
        return "worse" if (high is not None and high < 0 and p < alpha) else "worse, not significant"
    return "no difference"


def _comparison(arm: str, vs: str, a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray],
                s: ReportSettings) -> Comparison:
    """Paired comparison of two arms; ``b`` with one model (SFT) is compared to every seed of ``a``."""
    if len(b) == 1:
        only = next(iter(b.values()))
        matched = [(x, a[x], only) for x in sorted(a)]
    else:
        common = sorted(set(a) & set(b))
        if not common:
            raise AblationError(f"{arm} vs {vs}: no seed in common ({sorted(a)} vs {sorted(b)})")
        matched = [(x, a[x], b[x]) for x in common]
    diffs = [float(x.mean() - y.mean()) for _, x, y in matched]
    _, slo, shi = t_interval(diffs, s.level)
    per_problem = np.mean([x.astype(float) - y.astype(float) for _, x, y in matched], axis=0)
    est = bootstrap_mean(per_problem, samples=s.samples, seed=s.seed, level=s.level)
    pooled = mcnemar(np.concatenate([x for _, x, _ in matched]), np.concatenate([y for _, _, y in matched]))
    diff = float(np.mean(diffs))
    return Comparison(arm=arm, vs=vs, seeds=[x for x, _, _ in matched], diff=diff, diff_low=_num(est.low),
                      diff_high=_num(est.high), seed_diffs=diffs, seed_low=slo, seed_high=shi,
                      wins=sum(d > 0 for d in diffs), losses=sum(d < 0 for d in diffs), b=pooled.b, c=pooled.c,
                      p_value=pooled.p_value, p_per_seed=[mcnemar(x, y).p_value for _, x, y in matched],
                      mde=_num(minimal_detectable_effect(per_problem, alpha=s.alpha, power=s.power)),
                      reading=_reading(diff, est.low, est.high, pooled.p_value, s.alpha))


def _group_accuracy(groups: Mapping[Any, list[int]], vecs: Mapping[str, Mapping[int, np.ndarray]]
                    ) -> list[tuple[Any, int, dict[str, float | None]]]:
    """(group, n, model -> accuracy averaged over seeds) per group of problem indices."""
    rows = []
    for key, idx in groups.items():
        acc = {arm: (float(np.mean([v[idx].mean() for v in by_seed.values()])) if idx else None)
               for arm, by_seed in vecs.items()}
        rows.append((key, len(idx), acc))
    return rows


def _pair_features(pairs: Sequence[Pair], rejected_dims: Mapping[tuple[str, int], Mapping[str, float]]
                   ) -> dict[str, list[float]]:
    """Per feature of :data:`FEATURES`, its value on every pair (NaN where unknown)."""
    feats: dict[str, list[float]] = {f: [] for f in FEATURES}
    for p in pairs:
        feats["weight_raw"].append(p.weight_raw)
        feats["wrongness"].append(p.wrongness)
        feats["absurdity"].append(p.absurdity)
        feats["confidence_rejected"].append(p.confidence_rejected)
        feats["confidence_gap"].append(p.confidence_rejected - p.confidence_chosen)
        feats["log_perplexity"].append(math.log(p.perplexity) if p.perplexity > 0 else math.nan)
        feats["similarity"].append(p.similarity)
        feats["hardness"].append(p.hardness)
        dims = rejected_dims.get((p.problem_id, p.rejected_index)) or {}
        for d in DIMENSIONS:
            feats[d].append(float(dims[d]) if dims.get(d) is not None else math.nan)
    return feats


def weight_summary(arm: str, pairs: Sequence[Pair], rejected_dims: Mapping[tuple[str, int], Mapping[str, float]],
                   *, degenerate_std: float = 0.05, degenerate_clipped: float = 0.5) -> WeightSummary:
    """Distribution of an arm's pair weights and their correlations with the pair features and dims."""
    if not pairs:
        return WeightSummary(arm=arm, n_pairs=0)
    composition = {"reference_chosen_share": sum(p.chosen_index is None for p in pairs) / len(pairs),
                   "unsound_negative_share": sum(p.rejected_kind == "unsound" for p in pairs) / len(pairs),
                   "mean_similarity": _num(np.nanmean([p.similarity for p in pairs]))}
    w = np.array([p.weight for p in pairs], dtype=float)
    feats = _pair_features(pairs, rejected_dims)
    clipped = sum(p.clipped for p in pairs) / len(pairs)
    std = float(w.std())
    weighted = any(p.strategy == "weighted" for p in pairs)  # uniform/random are constant by design
    return WeightSummary(
        arm=arm, n_pairs=len(pairs), mean=float(w.mean()), std=std, min=float(w.min()),
        q10=float(np.quantile(w, 0.1)), median=float(np.median(w)), q90=float(np.quantile(w, 0.9)),
        max=float(w.max()), clipped_share=clipped, constant=bool(np.ptp(w) == 0), **composition,
        degenerate=bool(std < degenerate_std or clipped > degenerate_clipped) if weighted else None,
        correlations={f: Correlation(**correlation(w, feats[f])) for f in FEATURES}, weights=[float(x) for x in w])


def verifier_check(kinds: Mapping[str, Mapping[str, Any]], graded_correct: Mapping[str, bool]) -> VerifierCheck:
    """The verifier's arithmetic flag against the known slips on the SFT model's wrong outputs, and its
    correctness against the grader's on all outputs."""
    wrong = [k for k in kinds.values() if k["known"] != "correct"]
    tp = sum(k["error"] == "arithmetic" and k["known"] == "arithmetic" for k in wrong)
    fp = sum(k["error"] == "arithmetic" and k["known"] != "arithmetic" for k in wrong)
    fn = sum(k["error"] != "arithmetic" and k["known"] == "arithmetic" for k in wrong)
    tn = len(wrong) - tp - fp - fn
    judged = [(pid, k["verifier_correct"]) for pid, k in kinds.items() if k["verifier_correct"] is not None]
    agree = sum(v == bool(graded_correct[pid]) for pid, v in judged)
    return VerifierCheck(n_wrong=len(wrong), tp=tp, fp=fp, fn=fn, tn=tn,
                         agreement=(tp + tn) / len(wrong) if wrong else None,
                         precision=tp / (tp + fp) if tp + fp else None, recall=tp / (tp + fn) if tp + fn else None,
                         known_arithmetic_share=(tp + fn) / len(wrong) if wrong else None,
                         correct_agreement=agree / len(judged) if judged else None, n_judged=len(judged))


def error_types(kinds: Mapping[str, Mapping[str, Any]]) -> ErrorTypes | None:
    """The SFT model's wrong outputs by the generator's error type, each with the verifier's split of it
    (arithmetic / structural, :func:`error_kind`); None when no output has a known type (real data)."""
    wrong = [k for k in kinds.values() if k.get("known_type") not in (None, "correct")]
    if not wrong:
        return None
    rows = []
    for kind in SYNTHETIC_ERROR_KINDS:
        these = [k for k in wrong if k["known_type"] == kind]
        arithmetic = sum(k["error"] == "arithmetic" for k in these)
        rows.append(ErrorTypeRow(kind=kind, n=len(these), share=len(these) / len(wrong),
                                 verifier_arithmetic=arithmetic, verifier_structural=len(these) - arithmetic))
    return ErrorTypes(
        n_wrong=len(wrong), rows=rows,
        structural_share=sum(k["known_type"] in STRUCTURAL_KINDS for k in wrong) / len(wrong),
        verifier_structural_share=sum(k["error"] == "structural" for k in wrong) / len(wrong))


def same_pairs(pairs: Mapping[str, Sequence[Pair]] | None, a: str, b: str) -> float | None:
    """The share of arm ``a``'s pairs that arm ``b`` has too (same problem, chosen and rejected sample), over
    the larger of the two; 1.0 = the two arms differ in their weights only. None without both arms' pairs."""
    if pairs is None or a not in pairs or b not in pairs:
        return None
    key = lambda p: (p.problem_id, p.chosen_index, p.rejected_index, p.chosen, p.rejected)  # noqa: E731
    ka, kb = {key(p) for p in pairs[a]}, {key(p) for p in pairs[b]}
    return len(ka & kb) / max(len(ka), len(kb)) if ka or kb else None


def _vectors(data: AblationData, ids: Sequence[str]) -> dict[str, dict[int, np.ndarray]]:
    """Model -> seed -> correctness over ``ids`` (SFT under seed 0); raises naming a missing result."""
    vecs: dict[str, dict[int, np.ndarray]] = {SFT: {0: _vector(data.sft, ids, "sft")}}
    for arm, by_seed in data.arms.items():
        if arm == SFT:
            raise AblationError("an arm may not be called 'sft' (the baseline's label)")
        if not by_seed:
            raise AblationError(f"arm {arm!r}: no seed")
        vecs[arm] = {int(x): _vector(c, ids, f"arm {arm!r} seed {x}") for x, c in by_seed.items()}
    return vecs


def _by_steps(problems: Sequence[Problem], vecs: Mapping[str, Mapping[int, np.ndarray]]) -> list[GroupRow]:
    steps: dict[Any, list[int]] = {}
    for i, p in enumerate(problems):
        steps.setdefault(p.meta.get("n_steps"), []).append(i)
    ordered = dict(sorted(steps.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    return [GroupRow(group=g, n=n, accuracy=acc) for g, n, acc in _group_accuracy(ordered, vecs)]


def _by_sft_error(sft_kinds: Mapping[str, Mapping[str, Any]], ids: Sequence[str],
                  vecs: Mapping[str, Mapping[int, np.ndarray]]) -> list[ErrorGroupRow]:
    missing = [i for i in ids if i not in sft_kinds]
    if missing:
        raise AblationError(f"sft_kinds: no classification for {len(missing)} problem(s), e.g. {missing[:3]}")
    axes = [("answer", ANSWER_KINDS), ("error", ERROR_KINDS), ("known", ERROR_KINDS)]
    if any(sft_kinds[pid].get("known_type") is not None for pid in ids):
        axes.append(("known_type", KNOWN_TYPES))
    rows = []
    for axis, kinds in axes:
        groups = {k: [i for i, pid in enumerate(ids) if sft_kinds[pid].get(axis) == k] for k in kinds}
        rows += [ErrorGroupRow(axis=axis, kind=k, n=n, accuracy=acc) for k, n, acc in _group_accuracy(groups, vecs)]
    return rows


def build_ablation_report(data: AblationData, settings: ReportSettings | None = None) -> AblationReport:
    """The ablation report (see the module doc) of ``data`` under ``settings`` (default: the schema's)."""
    s = settings or ReportSettings()
    if not data.problems:
        raise AblationError("no test problems")
    if not data.arms:
        raise AblationError("no DPO arm to report")
    if s.primary not in data.arms:
        raise AblationError(f"primary arm {s.primary!r} not among the arms {sorted(data.arms)}")
    ids = [p.id for p in data.problems]
    vecs = _vectors(data, ids)
    sft_row = _arm_row(SFT, {}, vecs[SFT], s).model_copy(update={"seeds": [], "seed_low": None, "seed_high": None})
    rows = [sft_row, *(_arm_row(arm, data.arm_meta.get(arm, {}), vecs[arm], s) for arm in data.arms)]
    comparisons = [_comparison(arm, SFT, vecs[arm], vecs[SFT], s) for arm in data.arms]
    if s.random_arm in data.arms:
        comparisons += [_comparison(arm, s.random_arm, vecs[arm], vecs[s.random_arm], s)
                        for arm in data.arms if arm != s.random_arm]
    if s.uniform_arm in data.arms:  # the weights alone
        weighted = [arm for arm in data.arms if data.arm_meta.get(arm, {}).get("strategy") == "weighted"]
        comparisons += [_comparison(arm, s.uniform_arm, vecs[arm], vecs[s.uniform_arm], s).model_copy(
            update={"same_pairs": same_pairs(data.pairs, arm, s.uniform_arm)}) for arm in weighted]
    by_error: list[ErrorGroupRow] = []
    check = types = None
    if data.sft_kinds is not None:
        by_error = _by_sft_error(data.sft_kinds, ids, vecs)
        kinds = {i: data.sft_kinds[i] for i in ids}
        check = verifier_check(kinds, dict(zip(ids, vecs[SFT][0], strict=True)))
        types = error_types(kinds)
    weights = [weight_summary(arm, data.pairs[arm], data.rejected_dims, degenerate_std=s.degenerate_std,
                              degenerate_clipped=s.degenerate_clipped)
               for arm in data.arms if data.pairs is not None and arm in data.pairs]
    report = AblationReport(
        n_problems=len(ids), level=s.level, bootstrap_samples=s.samples, seed=s.seed, alpha=s.alpha, power=s.power,
        primary=s.primary, random_arm=s.random_arm if s.random_arm in data.arms else None, arms=rows,
        comparisons=comparisons, by_steps=_by_steps(data.problems, vecs), by_sft_error=by_error, weights=weights,
        verifier_check=check, error_types=types, pool=data.pool, commit=git_commit())
    return report.model_copy(update={"reading": reading(report)})


# ---------------------------------------------------------------- the reading (computed)


def _pp(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:+.1f} pp"


def _share(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


def _describe(c: Comparison, level: float) -> str:
    ci = f"[{_pp(c.diff_low)}, {_pp(c.diff_high)}]"
    return (f"Δ = {_pp(c.diff)} ({round(100 * level)}% CI over problems {ci}; McNemar p = {format_p(c.p_value)}; "
            f"better in {c.wins}/{len(c.seeds)} seeds; minimal detectable effect {_mde(c.mde)}) → {c.reading}")


def _mde(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f} pp"


_RANDOM_VS_SFT = {"worse": "random DPO degrades the SFT model",
                  "worse, not significant": "random DPO is below SFT, not significantly",
                  "holds": "random DPO improves on SFT",
                  "better, not significant": "random DPO is above SFT, not significantly",
                  "no difference": "random DPO does not change accuracy"}


def pool_sentence(p: PoolSummary) -> str:
    """The sampled pool the pairs came from, as one diagnostic sentence."""
    k = str(p.k_min) if p.k_min == p.k_max else f"{p.k_min}-{p.k_max}"
    return (f"The pool: {p.problems} problems × k = {k} samples ({p.samples}); {_share(p.correct_share)} of the "
            f"samples correct ({_share(p.sound_correct_share)} correct and sound); {p.mixed} problems "
            f"({_share(p.mixed_share)}) mixed, {p.all_correct} all correct, {p.all_wrong} all wrong.")


def _diagnostics(report: AblationReport) -> list[str]:
    """The sampled pool, random DPO against SFT, the verifier against the known errors, and each arm's weights, as sentences."""
    out: list[str] = [pool_sentence(report.pool)] if report.pool else []
    random_sft = report.comparison(report.random_arm, SFT) if report.random_arm else None
    if random_sft:
        out.append(f"Does random DPO degrade? {_RANDOM_VS_SFT[random_sft.reading]}: "
                   f"{_describe(random_sft, report.level)}.")
    chk = report.verifier_check
    if chk and chk.n_wrong:
        out.append(
            f"Verifier vs known errors (SFT's {chk.n_wrong} wrong test outputs): arithmetic flag agrees with "
            f"the known slips on {_share(chk.agreement)} (precision {_share(chk.precision)}, recall "
            f"{_share(chk.recall)}; known slips in {_share(chk.known_arithmetic_share)} of the errors); "
            f"verifier correctness agrees with the grader on {_share(chk.correct_agreement)} of "
            f"{chk.n_judged} outputs.")
    for w in report.weights:
        if w.degenerate:
            out.append(f"Degenerate weights in {w.arm}: std {w.std:.3f}, clipped share {_share(w.clipped_share)} "
                       "— the weighting barely differs from uniform or is dominated by clipping.")
        elif w.degenerate is False:
            out.append(f"Weights of {w.arm}: std {w.std:.3f}, clipped share {_share(w.clipped_share)}, "
                       f"range [{w.min:.2f}, {w.max:.2f}].")
    return out


def reading(report: AblationReport) -> Reading:
    """Whether the paper's ordering (primary > random and > SFT) holds, and diagnostics, as sentences."""
    primary, rnd, level = report.primary, report.random_arm, report.level
    vs_sft = report.comparison(primary, SFT)
    vs_random = report.comparison(primary, rnd) if rnd else None
    checks = [c for c in (vs_sft, vs_random) if c is not None]
    holds = bool(checks) and all(c.reading == "holds" for c in checks) and vs_random is not None
    direction = bool(checks) and all(c.diff > 0 for c in checks)
    verdict = "holds" if holds else "same direction, not significant" if direction else "does not hold"
    lines = [f"The paper's ordering ({primary} > {rnd or 'random (not run)'} and > SFT) at this scale "
             f"(n = {report.n_problems} problems, α = {report.alpha}): **{verdict}**."]
    if vs_sft:
        lines.append(f"{primary} − SFT: {_describe(vs_sft, level)}.")
    if vs_random:
        lines.append(f"{primary} − {rnd}: {_describe(vs_random, level)}.")
    vs_uniform = next((c for c in report.comparisons if c.arm == primary and c.same_pairs is not None), None)
    if vs_uniform:
        lines.append(f"The weights alone, {primary} − {vs_uniform.vs} ({_share(vs_uniform.same_pairs)} of the pairs "
                     f"the same): {_describe(vs_uniform, level)}.")
    ranked = sorted(report.arms, key=lambda r: -(r.accuracy or 0))
    lines.append("Ranking by mean accuracy: " + " > ".join(f"{r.arm} ({100 * r.accuracy:.1f}%)"
                                                          for r in ranked) + ".")
    return Reading(verdict=verdict, holds=holds, sentences=lines, diagnostics=_diagnostics(report))
