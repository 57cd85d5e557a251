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

import json
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tasks.common.provenance import git_commit
from tasks.common.records import Pair, Problem, iter_jsonl, read_records
from tasks.evaluation.report import format_p
from tasks.evaluation.stats import bootstrap_mean, mcnemar
from verifier.answers import parse_number
from verifier.verdict import DIMENSIONS, Verdict

DASH = "—"
SFT = "sft"
ANSWER_KINDS = ("correct", "near_miss", "far_off", "no_answer")
ERROR_KINDS = ("correct", "arithmetic", "structural")
PAIR_FEATURES = ("weight_raw", "wrongness", "absurdity", "confidence_rejected", "confidence_gap",
                 "log_perplexity", "similarity", "hardness")
FEATURES = PAIR_FEATURES + DIMENSIONS


class AblationError(ValueError):
    """Inputs of the ablation report that do not fit together; the message names the arm/seed/file."""


# ---------------------------------------------------------------- classifying the SFT model's errors

_CALC_RE = re.compile(r"(?<![\d.])(-?\d+)\s*([-+*/×x])\s*(\d+)\s*=\s*(-?\d+(?:\.\d+)?)(?![\d.])")
_ANNOT_RE = re.compile(r"<<[^<>]*?=\s*(-?\d+(?:\.\d+)?)\s*>>\s*(-?\d+(?:\.\d+)?)(?![\d.])")


def _binop(a: int, op: str, b: int) -> Fraction | None:
    if op == "+":
        return Fraction(a + b)
    if op == "-":
        return Fraction(a - b)
    if op in "*×x":
        return Fraction(a * b)
    return Fraction(a, b) if b else None


def known_arithmetic_slip(text: str) -> bool:
    """Whether ``text`` states a wrong integer calculation: ``a op b = r`` with ``r`` not the result, or a
    GSM8K annotation ``<<…=r>>s`` whose shown value ``s`` differs from ``r``.

    This is the ground truth for synthetic problems (integer steps), computed without the verifier:

    >>> known_arithmetic_slip("12+18 = <<12+18=30>>30 shells"), known_arithmetic_slip("12+18 = <<12+18=31>>31")
    (False, True)
    """
    for a, op, b, r in _CALC_RE.findall(text or ""):
        value = _binop(int(a), op, int(b))
        if value is not None and value != Fraction(r):
            return True
    return any(Fraction(r) != Fraction(s) for r, s in _ANNOT_RE.findall(text or ""))


def answer_kind(extracted: str | None, gold: str, correct: bool, *, rel: float = 0.1,
                abs_tol: float = 1.0) -> str:
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


def classify_sft(records: Sequence[Mapping[str, Any]], verdicts: Mapping[str, Verdict], *,
                 rel: float = 0.1, abs_tol: float = 1.0) -> dict[str, dict[str, Any]]:
    """Problem id -> ``{"answer", "error", "known", "verifier_correct"}`` for the SFT model's graded
    outputs (``tasks.evaluation.grading.Graded`` rows as dicts); ``known`` is the ground-truth error kind from
    :func:`known_arithmetic_slip` (``arithmetic`` | ``structural`` | ``correct``)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        pid, correct = r["id"], bool(r["correct"])
        v = verdicts.get(pid)
        known = "correct" if correct else ("arithmetic" if known_arithmetic_slip(r.get("output", "")) else
                                           "structural")
        out[pid] = {"answer": answer_kind(r.get("extracted"), r["gold"], correct, rel=rel, abs_tol=abs_tol),
                    "error": error_kind(correct, v.dims if v is not None and v.status == "ok" else None),
                    "known": known, "verifier_correct": None if v is None else bool(v.correct)}
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


def _vector(correct: Mapping[str, bool], ids: Sequence[str], where: str) -> np.ndarray:
    missing = [i for i in ids if i not in correct]
    if missing:
        raise AblationError(f"{where}: no result for {len(missing)} test problem(s), e.g. {missing[:3]}")
    return np.array([bool(correct[i]) for i in ids], dtype=bool)


def _arm_row(arm: str, meta: Mapping[str, Any], vecs: Mapping[int, np.ndarray], *, samples: int, seed: int,
             level: float) -> dict[str, Any]:
    seeds = sorted(vecs)
    per_seed = [float(vecs[s].mean()) for s in seeds]
    mean, lo, hi = t_interval(per_seed, level)
    per_problem = np.mean([vecs[s] for s in seeds], axis=0)
    est = bootstrap_mean(per_problem, samples=samples, seed=seed, level=level)
    return {"arm": arm, "strategy": meta.get("strategy"), "lam": meta.get("lam"), "seeds": seeds,
            "per_seed": per_seed, "accuracy": mean, "seed_low": _clip01(lo), "seed_high": _clip01(hi),
            "problem_low": _num(est.low), "problem_high": _num(est.high), "n": int(per_problem.size)}


def _reading(diff: float, low: float | None, high: float | None, p: float, alpha: float) -> str:
    """``holds`` (better, CI above 0 and p < alpha) | ``better, not significant`` | ``worse, not
    significant`` | ``worse`` (CI below 0 and p < alpha) | ``no difference``."""
    if diff > 0:
        return "holds" if (low is not None and low > 0 and p < alpha) else "better, not significant"
    if diff < 0:
        return "worse" if (high is not None and high < 0 and p < alpha) else "worse, not significant"
    return "no difference"


def _comparison(arm: str, vs: str, a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray], *,
                samples: int, seed: int, level: float, alpha: float) -> dict[str, Any]:
    """Paired comparison of two arms; ``b`` with one model (SFT) is compared to every seed of ``a``."""
    if len(b) == 1:
        only = next(iter(b.values()))
        matched = [(s, a[s], only) for s in sorted(a)]
    else:
        common = sorted(set(a) & set(b))
        if not common:
            raise AblationError(f"{arm} vs {vs}: no seed in common ({sorted(a)} vs {sorted(b)})")
        matched = [(s, a[s], b[s]) for s in common]
    diffs = [float(x.mean() - y.mean()) for _, x, y in matched]
    _, slo, shi = t_interval(diffs, level)
    per_problem = np.mean([x.astype(float) - y.astype(float) for _, x, y in matched], axis=0)
    est = bootstrap_mean(per_problem, samples=samples, seed=seed, level=level)
    pooled = mcnemar(np.concatenate([x for _, x, _ in matched]), np.concatenate([y for _, _, y in matched]))
    per_seed_p = [mcnemar(x, y).p_value for _, x, y in matched]
    diff = float(np.mean(diffs))
    return {"arm": arm, "vs": vs, "seeds": [s for s, _, _ in matched], "diff": diff,
            "diff_low": _num(est.low), "diff_high": _num(est.high), "seed_diffs": diffs, "seed_low": slo,
            "seed_high": shi, "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
            "b": pooled.b, "c": pooled.c, "p_value": pooled.p_value, "p_per_seed": per_seed_p,
            "reading": _reading(diff, est.low, est.high, pooled.p_value, alpha)}


def _group_accuracy(groups: Mapping[Any, list[int]], vecs: Mapping[str, Mapping[int, np.ndarray]]
                    ) -> list[dict[str, Any]]:
    rows = []
    for key, idx in groups.items():
        acc = {arm: (float(np.mean([v[idx].mean() for v in by_seed.values()])) if idx else None)
               for arm, by_seed in vecs.items()}
        rows.append({"group": key, "n": len(idx), "accuracy": acc})
    return rows


def weight_summary(arm: str, pairs: Sequence[Pair], rejected_dims: Mapping[tuple[str, int], Mapping[str, float]],
                   *, degenerate_std: float = 0.05, degenerate_clipped: float = 0.5) -> dict[str, Any]:
    """Distribution of an arm's pair weights and their correlations with the pair features and dims."""
    w = np.array([p.weight for p in pairs], dtype=float)
    out: dict[str, Any] = {"arm": arm, "n_pairs": len(pairs)}
    if not len(pairs):
        return {**out, "mean": None, "std": None, "min": None, "q10": None, "median": None, "q90": None,
                "max": None, "clipped_share": None, "constant": True, "degenerate": None, "correlations": {}}
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
    constant = bool(np.ptp(w) == 0)
    clipped = sum(p.clipped for p in pairs) / len(pairs)
    std = float(w.std())
    weighted = any(p.strategy == "weighted" for p in pairs)  # uniform/random are constant by design
    return {**out, "mean": float(w.mean()), "std": std, "min": float(w.min()),
            "q10": float(np.quantile(w, 0.1)), "median": float(np.median(w)), "q90": float(np.quantile(w, 0.9)),
            "max": float(w.max()), "clipped_share": clipped, "constant": constant,
            "degenerate": bool(std < degenerate_std or clipped > degenerate_clipped) if weighted else None,
            "correlations": {f: correlation(w, feats[f]) for f in FEATURES},
            "weights": [float(x) for x in w]}


def verifier_check(kinds: Mapping[str, Mapping[str, Any]], graded_correct: Mapping[str, bool]) -> dict[str, Any]:
    """The verifier's arithmetic flag against the known slips on the SFT model's wrong outputs, and its
    correctness against the grader's on all outputs."""
    wrong = [k for k in kinds.values() if k["known"] != "correct"]
    tp = sum(k["error"] == "arithmetic" and k["known"] == "arithmetic" for k in wrong)
    fp = sum(k["error"] == "arithmetic" and k["known"] != "arithmetic" for k in wrong)
    fn = sum(k["error"] != "arithmetic" and k["known"] == "arithmetic" for k in wrong)
    tn = len(wrong) - tp - fp - fn
    judged = [(pid, k["verifier_correct"]) for pid, k in kinds.items() if k["verifier_correct"] is not None]
    agree = sum(v == bool(graded_correct[pid]) for pid, v in judged)
    return {"n_wrong": len(wrong), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "agreement": (tp + tn) / len(wrong) if wrong else None,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "known_arithmetic_share": (tp + fn) / len(wrong) if wrong else None,
            "correct_agreement": agree / len(judged) if judged else None, "n_judged": len(judged)}


def build_ablation_report(
    problems: Sequence[Problem],
    sft: Mapping[str, bool],
    arms: Mapping[str, Mapping[int, Mapping[str, bool]]],
    *,
    arm_meta: Mapping[str, Mapping[str, Any]] | None = None,
    sft_kinds: Mapping[str, Mapping[str, Any]] | None = None,
    pairs: Mapping[str, Sequence[Pair]] | None = None,
    rejected_dims: Mapping[tuple[str, int], Mapping[str, float]] | None = None,
    primary: str = "weighted-0.3",
    random_arm: str = "random",
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = 0.05,
    degenerate_std: float = 0.05,
    degenerate_clipped: float = 0.5,
) -> dict[str, Any]:
    """The ablation report as JSON-able data (see the module doc).

    ``problems``: the test set (ids, ``meta["n_steps"]``); ``sft``: id -> correct of the SFT model;
    ``arms``: arm -> seed -> id -> correct; ``sft_kinds``: :func:`classify_sft`; ``pairs``: arm -> its
    pairs; ``rejected_dims``: (problem id, sample index) -> the six dims of that sample's verdict.
    """
    if not problems:
        raise AblationError("no test problems")
    if not arms:
        raise AblationError("no DPO arm to report")
    if primary not in arms:
        raise AblationError(f"primary arm {primary!r} not among the arms {sorted(arms)}")
    ids = [p.id for p in problems]
    arm_meta = arm_meta or {}
    vecs: dict[str, dict[int, np.ndarray]] = {SFT: {0: _vector(sft, ids, "sft")}}
    for arm, by_seed in arms.items():
        if arm == SFT:
            raise AblationError("an arm may not be called 'sft' (the baseline's label)")
        if not by_seed:
            raise AblationError(f"arm {arm!r}: no seed")
        vecs[arm] = {int(s): _vector(c, ids, f"arm {arm!r} seed {s}") for s, c in by_seed.items()}
    kw = {"samples": samples, "seed": seed, "level": level}
    rows = [_arm_row(SFT, {"strategy": None, "lam": None}, vecs[SFT], **kw)]
    rows[0].update(seeds=[], seed_low=None, seed_high=None)
    rows += [_arm_row(arm, arm_meta.get(arm, {}), vecs[arm], **kw) for arm in arms]

    comparisons = [_comparison(arm, SFT, vecs[arm], vecs[SFT], alpha=alpha, **kw) for arm in arms]
    if random_arm in arms:
        comparisons += [_comparison(arm, random_arm, vecs[arm], vecs[random_arm], alpha=alpha, **kw)
                        for arm in arms if arm != random_arm]

    steps: dict[Any, list[int]] = {}
    for i, p in enumerate(problems):
        steps.setdefault(p.meta.get("n_steps"), []).append(i)
    by_steps = _group_accuracy(dict(sorted(steps.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))), vecs)

    by_error: list[dict[str, Any]] = []
    check = None
    if sft_kinds is not None:
        missing = [i for i in ids if i not in sft_kinds]
        if missing:
            raise AblationError(f"sft_kinds: no classification for {len(missing)} problem(s), e.g. {missing[:3]}")
        for axis, kinds in (("answer", ANSWER_KINDS), ("error", ERROR_KINDS), ("known", ERROR_KINDS)):
            groups = {k: [i for i, pid in enumerate(ids) if sft_kinds[pid][axis] == k] for k in kinds}
            for row in _group_accuracy(groups, vecs):
                by_error.append({"axis": axis, "kind": row["group"], "n": row["n"], "accuracy": row["accuracy"]})
        check = verifier_check({i: sft_kinds[i] for i in ids}, dict(zip(ids, vecs[SFT][0], strict=True)))

    weights = [weight_summary(arm, pairs[arm], rejected_dims or {}, degenerate_std=degenerate_std,
                              degenerate_clipped=degenerate_clipped)
               for arm in arms if pairs is not None and arm in pairs]
    report = {"n_problems": len(ids), "level": level, "bootstrap_samples": samples, "seed": seed,
              "alpha": alpha, "primary": primary, "random_arm": random_arm if random_arm in arms else None,
              "arms": rows, "comparisons": comparisons, "by_steps": by_steps, "by_sft_error": by_error,
              "weights": weights, "verifier_check": check, "commit": git_commit()}
    report["reading"] = reading(report)
    return report


# ---------------------------------------------------------------- the reading (computed)


def _find(report: Mapping[str, Any], arm: str, vs: str) -> dict[str, Any] | None:
    return next((c for c in report["comparisons"] if c["arm"] == arm and c["vs"] == vs), None)


def _pp(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:+.1f} pp"


def _describe(c: Mapping[str, Any], level: float) -> str:
    ci = f"[{_pp(c['diff_low'])}, {_pp(c['diff_high'])}]"
    return (f"Δ = {_pp(c['diff'])} ({round(100 * level)}% CI over problems {ci}; McNemar p = {format_p(c['p_value'])}; "
            f"better in {c['wins']}/{len(c['seeds'])} seeds) → {c['reading']}")


def reading(report: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the paper's ordering (primary > random and > SFT) holds, and diagnostics, as sentences."""
    primary, rnd, level = report["primary"], report["random_arm"], report["level"]
    vs_sft = _find(report, primary, SFT)
    vs_random = _find(report, primary, rnd) if rnd else None
    random_sft = _find(report, rnd, SFT) if rnd else None
    checks = [c for c in (vs_sft, vs_random) if c is not None]
    holds = bool(checks) and all(c["reading"] == "holds" for c in checks) and vs_random is not None
    direction = bool(checks) and all(c["diff"] > 0 for c in checks)
    if holds:
        verdict = "holds"
    elif direction:
        verdict = "same direction, not significant"
    else:
        verdict = "does not hold"
    lines = [f"The paper's ordering ({primary} > {rnd or 'random (not run)'} and > SFT) at this scale "
             f"(n = {report['n_problems']} problems, α = {report['alpha']}): **{verdict}**."]
    if vs_sft:
        lines.append(f"{primary} − SFT: {_describe(vs_sft, level)}.")
    if vs_random:
        lines.append(f"{primary} − {rnd}: {_describe(vs_random, level)}.")
    ranked = sorted(report["arms"], key=lambda r: -(r["accuracy"] or 0))
    lines.append("Ranking by mean accuracy: " + " > ".join(f"{r['arm']} ({100 * r['accuracy']:.1f}%)"
                                                          for r in ranked) + ".")
    diagnostics: list[str] = []
    if random_sft:
        degrade = {"worse": "random DPO degrades the SFT model",
                   "worse, not significant": "random DPO is below SFT, not significantly",
                   "holds": "random DPO improves on SFT",
                   "better, not significant": "random DPO is above SFT, not significantly",
                   "no difference": "random DPO does not change accuracy"}[random_sft["reading"]]
        diagnostics.append(f"Does random DPO degrade? {degrade}: {_describe(random_sft, level)}.")
    chk = report.get("verifier_check")
    if chk and chk["n_wrong"]:
        diagnostics.append(
            f"Verifier vs known errors (SFT's {chk['n_wrong']} wrong test outputs): arithmetic flag agrees with "
            f"the known slips on {_share(chk['agreement'])} (precision {_share(chk['precision'])}, recall "
            f"{_share(chk['recall'])}; known slips in {_share(chk['known_arithmetic_share'])} of the errors); "
            f"verifier correctness agrees with the grader on {_share(chk['correct_agreement'])} of "
            f"{chk['n_judged']} outputs.")
    for w in report["weights"]:
        if w["degenerate"]:
            diagnostics.append(f"Degenerate weights in {w['arm']}: std {w['std']:.3f}, clipped share "
                               f"{_share(w['clipped_share'])} — the weighting barely differs from uniform "
                               f"or is dominated by clipping.")
        elif w["degenerate"] is False:
            diagnostics.append(f"Weights of {w['arm']}: std {w['std']:.3f}, clipped share "
                               f"{_share(w['clipped_share'])}, range [{w['min']:.2f}, {w['max']:.2f}].")
    return {"verdict": verdict, "holds": holds, "sentences": lines, "diagnostics": diagnostics}


def _share(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


# ---------------------------------------------------------------- rendering


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}"


def _ci(lo: float | None, hi: float | None, signed: bool = False) -> str:
    if lo is None or hi is None:
        return DASH
    f = (lambda v: f"{100 * v:+.1f}") if signed else _pct
    return f"[{f(lo)}, {f(hi)}]"


def _corr(x: float | None) -> str:
    return DASH if x is None else f"{x:+.2f}"


def _arms_table(rows: Sequence[Mapping[str, Any]], level: int, what: str = "accuracy") -> list[str]:
    lines = [f"| arm | strategy | λ | seeds | {what} | {level}% CI seeds | {level}% CI problems | per seed |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for r in rows:
        lam = DASH if r["lam"] is None else f"{r['lam']:g}"
        per_seed = ", ".join(_pct(x) for x in r["per_seed"]) if r["seeds"] else DASH
        lines.append(f"| {r['arm']} | {r['strategy'] or DASH} | {lam} | {len(r['seeds']) or DASH} | "
                     f"{_pct(r['accuracy'])} | {_ci(r['seed_low'], r['seed_high'])} | "
                     f"{_ci(r['problem_low'], r['problem_high'])} | {per_seed} |")
    return lines


def _comparisons_table(comparisons: Sequence[Mapping[str, Any]], level: int) -> list[str]:
    lines = [f"| arm | vs | Δ | {level}% CI problems | {level}% CI seeds | seeds better | b / c | McNemar p "
             "| p per seed | reading |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for c in comparisons:
        lines.append(f"| {c['arm']} | {c['vs']} | {100 * c['diff']:+.1f} | {_ci(c['diff_low'], c['diff_high'], True)} "
                     f"| {_ci(c['seed_low'], c['seed_high'], True)} | {c['wins']}/{len(c['seeds'])} | "
                     f"{c['b']} / {c['c']} | {format_p(c['p_value'])} | {', '.join(format_p(p) for p in c['p_per_seed'])} "
                     f"| {c['reading']} |")
    return lines


def render_markdown(report: Mapping[str, Any], command: str | None = None, title: str = "Ablation report",
                    image: str | None = "ablation.png", notes: str | None = None) -> str:
    """``ablation.json`` as Markdown (the tables and the computed reading); ``image``: the plot's link;
    ``notes``: Markdown written by a person after reading the results, placed after the computed reading."""
    level = round(100 * report["level"])
    lines = [f"# {title}", ""]
    if command:
        lines += ["Regenerate with:", "", "```bash", command, "```", ""]
    if report.get("commit"):
        lines += [f"From commit `{report['commit'][:12]}` (the code that ran the arms).", ""]
    lines += ["## Reading", "", *(f"- {x}" for x in report["reading"]["sentences"]), ""]
    if report["reading"]["diagnostics"]:
        lines += ["Diagnostics:", ""] + [f"- {d}" for d in report["reading"]["diagnostics"]] + [""]
    if notes and notes.strip():
        lines += [notes.strip(), ""]

    lines += ["## Accuracy per arm", "",
              f"Accuracy in %: mean over seeds; {level}% CI over seeds (Student t) and over problems "
              f"(bootstrap of the seed-averaged per-problem accuracy, {report['bootstrap_samples']} resamples, "
              f"seed {report['seed']}); n = {report['n_problems']} problems.", ""]
    lines += _arms_table(report["arms"], level)
    lines += ["", "## Paired differences", "",
              "Δ = accuracy(arm) − accuracy(vs) in percentage points, on the same problems. McNemar: exact test "
              "on the (problem, seed) pairs pooled over seeds (b = only the arm right, c = only vs right).", ""]
    lines += _comparisons_table(report["comparisons"], level)
    if report.get("sound"):
        how = ("exact: the generator knows every true step" if report["sound"].get("method") == "exact"
               else "judged by the verifier")
        lines += ["", "## Sound accuracy", "",
                  f"The share of outputs whose final answer and every stated step are right ({how}); same "
                  "intervals and tests as above.", ""]
        lines += _arms_table(report["sound"]["arms"], level, "sound accuracy")
        lines += [""] + _comparisons_table(report["sound"]["comparisons"], level)
    if report.get("displacement"):
        lines += ["", "## Likelihood displacement", "",
                  "Mean summed log-probability of the training pairs' chosen and rejected responses under the policy "
                  "before DPO (= the reference) and after it, mean over seeds. A chosen Δ below 0 is displacement: "
                  "DPO lowered the chosen response too.", "",
                  "| arm | seeds | chosen before | chosen after | chosen Δ | rejected Δ | chosen fell |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["displacement"]:
            lines.append(f"| {r['arm']} | {r['seeds']} | {r['logps_chosen_before']:.2f} | {r['logps_chosen_after']:.2f} "
                         f"| {r['logps_chosen_delta']:+.2f} | {r['logps_rejected_delta']:+.2f} "
                         f"| {100 * r['share_chosen_logp_fell']:.0f}% |")
    arms = [r["arm"] for r in report["arms"]]
    lines += ["", "## Accuracy (%) by difficulty (number of steps)", "",
              "| steps | n | " + " | ".join(arms) + " |", "| ---: | ---: |" + " ---: |" * len(arms)]
    for row in report["by_steps"]:
        g = DASH if row["group"] is None else row["group"]
        lines.append(f"| {g} | {row['n']} | " + " | ".join(_pct(row["accuracy"][a]) for a in arms) + " |")

    if report["by_sft_error"]:
        axis_names = {"answer": "SFT's final answer", "error": "SFT's error (verifier)",
                      "known": "SFT's error (known, synthetic)"}
        lines += ["", "## Accuracy (%) by what the SFT model did on the problem", "",
                  "Final answer: near miss = within max(abs, rel·|gold|) of the gold answer. Error: arithmetic = "
                  "the verifier found a wrong calculation (symbolic_validity > 0), structural = wrong without "
                  "one; *known* = the same split from the stated calculations themselves (ground truth).", "",
                  "| grouping | SFT outcome | n | " + " | ".join(arms) + " |",
                  "| --- | --- | ---: |" + " ---: |" * len(arms)]
        for row in report["by_sft_error"]:
            lines.append(f"| {axis_names[row['axis']]} | {row['kind']} | {row['n']} | "
                         + " | ".join(_pct(row["accuracy"][a]) for a in arms) + " |")

    if report["weights"]:
        lines += ["", "## Pair weights", "",
                  "| arm | pairs | mean | std | min | q10 | median | q90 | max | clipped | degenerate |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for w in report["weights"]:
            if not w["n_pairs"]:
                lines.append(f"| {w['arm']} | 0 |" + f" {DASH} |" * 9)
                continue
            deg = DASH if w["degenerate"] is None else ("yes" if w["degenerate"] else "no")
            lines.append(f"| {w['arm']} | {w['n_pairs']} | {w['mean']:.3f} | {w['std']:.3f} | {w['min']:.3f} | "
                         f"{w['q10']:.3f} | {w['median']:.3f} | {w['q90']:.3f} | {w['max']:.3f} | "
                         f"{_share(w['clipped_share'])} | {deg} |")
        varying = [w for w in report["weights"] if w["n_pairs"] and not w["constant"]]
        if varying:
            lines += ["", "Spearman (Pearson) correlation of the pair weight with the pair features and the "
                          "rejected solution's verifier dimensions (constant weights have none):", "",
                      "| feature | " + " | ".join(w["arm"] for w in varying) + " |",
                      "| --- |" + " ---: |" * len(varying)]
            for f in FEATURES:
                cells = [f"{_corr(w['correlations'][f]['spearman'])} ({_corr(w['correlations'][f]['pearson'])})"
                         for w in varying]
                lines.append(f"| {f} | " + " | ".join(cells) + " |")

    chk = report.get("verifier_check")
    if chk:
        lines += ["", "## Verifier vs known errors (SFT outputs on the test set)", "",
                  "| | known arithmetic slip | no known slip |", "| --- | ---: | ---: |",
                  f"| verifier: arithmetic | {chk['tp']} | {chk['fp']} |",
                  f"| verifier: structural | {chk['fn']} | {chk['tn']} |", "",
                  f"Agreement {_share(chk['agreement'])}, precision {_share(chk['precision'])}, recall "
                  f"{_share(chk['recall'])}; verifier correctness = grader on {_share(chk['correct_agreement'])} "
                  f"of {chk['n_judged']} outputs."]
    if image:
        lines += ["", f"![ablation plot]({image})"]
    return "\n".join(lines) + "\n"


def plot_ablation(report: Mapping[str, Any], path: str | Path) -> Path:
    """One PNG: accuracy per arm (CI over problems, seed dots), paired Δ (forest plot), accuracy by steps,
    by the SFT model's error, weight histograms and weight–feature correlations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 9.5), layout="constrained")
    ax = fig.subplots(2, 3).ravel()
    arms = [r["arm"] for r in report["arms"]]
    x = np.arange(len(arms))
    acc = [100 * (r["accuracy"] or 0) for r in report["arms"]]
    lo = [a - 100 * (r["problem_low"] if r["problem_low"] is not None else a / 100) for a, r in
          zip(acc, report["arms"], strict=True)]
    hi = [100 * (r["problem_high"] if r["problem_high"] is not None else a / 100) - a for a, r in
          zip(acc, report["arms"], strict=True)]
    ax[0].bar(x, acc, yerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.7)
    for j, r in enumerate(report["arms"]):
        ax[0].scatter([j] * len(r["per_seed"]), [100 * s for s in r["per_seed"]], color="k", s=12, zorder=3)
    ax[0].set_xticks(x, arms, rotation=30, ha="right")
    ax[0].set_ylabel("accuracy (%)")
    ax[0].set_title(f"accuracy per arm ({round(100 * report['level'])}% CI over problems; dots = seeds)")

    comps = report["comparisons"]
    y = np.arange(len(comps))
    d = [100 * c["diff"] for c in comps]
    err = [[v - 100 * (c["diff_low"] if c["diff_low"] is not None else v / 100) for v, c in zip(d, comps, strict=True)],
           [100 * (c["diff_high"] if c["diff_high"] is not None else v / 100) - v for v, c in zip(d, comps, strict=True)]]
    ax[1].errorbar(d, y, xerr=err, fmt="o", capsize=3)
    ax[1].axvline(0, color="grey", lw=1)
    ax[1].set_yticks(y, [f"{c['arm']} − {c['vs']}" for c in comps])
    ax[1].set_xlabel("Δ accuracy (pp)")
    ax[1].set_title("paired differences")

    for arm in arms:
        rows = [r for r in report["by_steps"] if r["group"] is not None and r["accuracy"][arm] is not None]
        ax[2].plot([r["group"] for r in rows], [100 * r["accuracy"][arm] for r in rows], marker="o", label=arm)
    ax[2].set_xticks(sorted({r["group"] for r in report["by_steps"] if r["group"] is not None}))
    ax[2].set_xlabel("number of steps")
    ax[2].set_ylabel("accuracy (%)")
    ax[2].set_title("accuracy by difficulty")
    ax[2].legend(fontsize="small")

    groups = [r for r in report["by_sft_error"] if r["axis"] in ("answer", "error") and r["kind"] != "correct"]
    if groups:
        gx = np.arange(len(groups))
        width = 0.8 / max(len(arms), 1)
        for j, arm in enumerate(arms):
            vals = [100 * (g["accuracy"][arm] or 0) for g in groups]
            ax[3].bar(gx + (j - (len(arms) - 1) / 2) * width, vals, width, label=arm)
        ax[3].set_xticks(gx, [f"{g['kind']}\n(n={g['n']})" for g in groups])
        ax[3].legend(fontsize="small")
    ax[3].set_ylabel("accuracy (%)")
    ax[3].set_title("accuracy on problems the SFT model got wrong, by its error")

    for w in report["weights"]:
        if w["n_pairs"]:
            ax[4].hist(w["weights"], bins=30, alpha=0.5, label=f"{w['arm']} (std {w['std']:.2f})")
    ax[4].set_xlabel("pair weight")
    ax[4].set_title("weight distribution per arm")
    if report["weights"]:
        ax[4].legend(fontsize="small")

    varying = [w for w in report["weights"] if w["n_pairs"] and not w["constant"]]
    if varying:
        mat = np.array([[w["correlations"][f]["spearman"] if w["correlations"][f]["spearman"] is not None
                         else np.nan for f in FEATURES] for w in varying])
        im = ax[5].imshow(mat, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
        ax[5].set_xticks(np.arange(len(FEATURES)), FEATURES, rotation=60, ha="right", fontsize=8)
        ax[5].set_yticks(np.arange(len(varying)), [w["arm"] for w in varying])
        fig.colorbar(im, ax=ax[5])
    ax[5].set_title("Spearman: weight vs features / dims")
    fig.suptitle(f"ablation — {report['reading']['verdict']}")
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


# ---------------------------------------------------------------- reading the stage folders


def read_graded(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an evaluate stage's ``<dataset>.jsonl``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"evaluation records not found: {path}")
    rows = []
    for line_no, row in enumerate(iter_jsonl(path), start=1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("correct"), bool):
            raise AblationError(f"{path}: line {line_no} lacks a string 'id' and a boolean 'correct'")
        rows.append(row)
    return rows


def read_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"pairs file not found: {path}")
    return read_records(path, Pair, error=AblationError)


def dataset_name(cfg) -> str:
    """``ablation.dataset``, else the first ``evaluate.datasets`` / ``data.eval`` name."""
    ab = getattr(cfg, "ablation", None)
    if ab is not None and ab.dataset:
        return ab.dataset
    names = list(cfg.evaluate.datasets) or [d.name for d in cfg.data.eval]
    if not names:
        raise AblationError("no evaluation set: set ablation.dataset or data.eval")
    return names[0]


def score_sft_outputs(cfg, problems: Mapping[str, Problem], records: Sequence[Mapping[str, Any]],
                      verifier=None) -> dict[str, Verdict]:
    """Run the verifier on the SFT model's evaluation outputs: problem id -> verdict."""
    if verifier is None:
        from verifier import MathVerifier

        verifier = MathVerifier(cfg.verify)
    items = [{"question": problems[r["id"]].question, "solution": r.get("output", ""), "gold": r["gold"],
              "reference": problems[r["id"]].solution, "problem_id": r["id"], "index": 0} for r in records]
    verdicts = verifier.score_batch(items, workers=cfg.verify.workers, progress=False)
    if len(verdicts) != len(items):
        raise AblationError(f"verifier returned {len(verdicts)} verdicts for {len(items)} outputs")
    return {r["id"]: v.model_copy(update={"problem_id": r["id"], "index": 0})
            for r, v in zip(records, verdicts, strict=True)}


def read_test_set(name: str, sft_eval: str | Path, data_dir: str | Path
                  ) -> tuple[dict[str, Problem], list[dict[str, Any]]]:
    """(id -> test problem, the SFT model's evaluation rows of set ``name``); every evaluated id must be a
    problem of the set."""
    from tasks.evaluation.evalsets import read_problem_file

    problem_file = Path(data_dir) / "eval" / f"{name}.jsonl"
    if not problem_file.is_file():
        raise AblationError(f"test set not found: {problem_file}")
    all_problems = {p.id: p for p in read_problem_file(problem_file)}
    sft_rows = read_graded(Path(sft_eval) / f"{name}.jsonl")
    unknown = [r["id"] for r in sft_rows if r["id"] not in all_problems]
    if unknown:
        raise AblationError(f"{sft_eval}: {len(unknown)} evaluated id(s) not in {problem_file}, e.g. {unknown[:3]}")
    return all_problems, sft_rows


def outcomes(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, bool]:
    """id -> ``row[key]`` (``correct`` or ``sound``) of the rows where it is a boolean."""
    return {r["id"]: r[key] for r in rows if isinstance(r.get(key), bool)}


def arm_outcomes(arm_rows: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]], key: str
                 ) -> dict[str, dict[int, dict[str, bool]]]:
    return {arm: {s: outcomes(rows, key) for s, rows in by_seed.items()} for arm, by_seed in arm_rows.items()}


def sound_section(problems: Sequence[Problem], sft_rows: Sequence[Mapping[str, Any]],
                  arm_rows: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]],
                  settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """Arm rows and comparisons on sound correctness, when every record of every model has ``sound``."""
    sft_sound = outcomes(sft_rows, "sound")
    arms_sound = arm_outcomes(arm_rows, "sound")
    if len(sft_sound) != len(sft_rows) or any(len(v) != len(sft_rows) for b in arms_sound.values()
                                              for v in b.values()):
        return None
    sound = build_ablation_report(problems, sft_sound, arms_sound, **settings)
    methods = {r.get("sound_method") for r in sft_rows}
    return {"arms": sound["arms"], "comparisons": sound["comparisons"],
            "method": methods.pop() if len(methods) == 1 else "mixed"}


def publish(report_dir: str | Path, dest: str | Path, command: str | None = None) -> Path:
    """Write ``dest`` (e.g. ``docs/results/tiny.md``) from ``report_dir/ablation.json``, with ``command`` as
    the line that regenerates it, and copy the plot beside it as ``<stem>.png``.

    A hand-written analysis kept beside it as ``<stem>.notes.md`` (e.g. ``docs/results/tiny.notes.md``)
    is included after the computed reading, so regenerating the report keeps it."""
    import shutil

    report_dir, dest = Path(report_dir), Path(dest)
    notes_file = dest.with_name(dest.stem + ".notes.md")
    notes = notes_file.read_text(encoding="utf-8") if notes_file.is_file() else None
    report = json.loads((report_dir / "ablation.json").read_text())
    dest.parent.mkdir(parents=True, exist_ok=True)
    image = dest.with_suffix(".png")
    shutil.copyfile(report_dir / "ablation.png", image)
    title = f"Ablation: {report.get('profile') or ''} on {report.get('dataset') or ''}"
    dest.write_text(render_markdown(report, command or report.get("command"), title, image.name, notes),
                    encoding="utf-8")
    return dest


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """``<arm>/accuracy``, ``<arm>-<vs>/diff`` / ``p_value``, ``holds`` for the manifest and MLflow."""
    out: dict[str, float] = {"holds": float(report["reading"]["holds"])}
    for r in report["arms"]:
        out[f"{r['arm']}/accuracy"] = r["accuracy"]
    for c in report["comparisons"]:
        out[f"{c['arm']}-{c['vs']}/diff"] = c["diff"]
        out[f"{c['arm']}-{c['vs']}/p_value"] = c["p_value"]
    for r in (report.get("sound") or {}).get("arms", []):
        out[f"{r['arm']}/sound_accuracy"] = r["accuracy"]
    for c in (report.get("sound") or {}).get("comparisons", []):
        out[f"{c['arm']}-{c['vs']}/sound_diff"] = c["diff"]
    for w in report["weights"]:
        if w["n_pairs"]:
            out[f"{w['arm']}/weight_std"] = w["std"]
            out[f"{w['arm']}/clipped_share"] = w["clipped_share"]
    return {k: float(v) for k, v in out.items() if v is not None}


def arm_displacement(arm_evals: Mapping[str, Mapping[int, str | Path]]) -> list[dict[str, Any]]:
    """Per arm, the DPO stages' likelihood-displacement metrics (:func:`tasks.evaluation.report.displacement_rows`)
    averaged over the seeds that have them."""
    from tasks.evaluation.report import DISPLACEMENT_KEYS, displacement_rows

    out = []
    for arm, by_seed in arm_evals.items():
        rows = displacement_rows({str(s): d for s, d in by_seed.items()})
        if rows:
            out.append({"arm": arm, "seeds": len(rows),
                        **{k: float(np.mean([r[k] for r in rows])) for k in DISPLACEMENT_KEYS}})
    return out
