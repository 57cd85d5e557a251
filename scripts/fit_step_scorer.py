"""Fit the learned step scorer (``verifier/models/<SCORER_VERSION>.json``, now v5) on PRM800K phase-1 TRAIN.

Data: ``<data>/prm800k/phase1_train_plus.stepwise.jsonl.gz`` (900 MATH *train* problems; phase1_test is
MATH-500 and is never read here) and ``<data>/math/train.jsonl`` (gold answers, matched on the problem text
with its whitespace normalised, and the reference solutions on which the threshold's false-flag rate is
checked). Every rated candidate step is analysed in its context
(the chosen prefix + the candidate, with ``# Answer`` appended when the row carries a final answer, as in
the original PRM800K steps) by the symbolic channel only, and turned into :func:`verifier.learned.step_features`.
Label: rating ``-1`` = bad (1); ``0`` and ``+1`` = not bad (0).

Model: L2 logistic regression (liblinear) on standardised dense features + binary hashed n-grams. ``C`` is
chosen by 5-fold cross-validation grouped by problem (train only); the printed CV AUROC is out-of-fold.
Threshold: the out-of-fold probability cut that maximises first-error-step F1 on the train trajectories
(every rated row: its chosen prefix + the candidate; the first step that the scorer or a wrong calculation rejects vs the first ``-1`` step), among cuts
that give a first error (either channel) to at most ``--max-ref-flag`` (4%) of a seeded sample of MATH train
reference solutions (all correct) and add at most ``--max-added-flag`` (2%) to the symbolic channel's own rate
on it and on a sample of GSM8K train references. Deterministic
(``--seed``). Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/fit_step_scorer.py [--data ../shared/data] [--workers 2]
        [--limit N] [--cache /tmp/step_features.json.gz] [--out verifier/models/step_scorer-v5.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conf.schema import VerifyConfig  # noqa: E402
from verifier.core import MathVerifier  # noqa: E402
from verifier.learned import DENSE, FEATURE_VERSION, N_HASH, SCORER_VERSION, step_features  # noqa: E402

VERSION = SCORER_VERSION
C_GRID = (0.003, 0.01, 0.03, 0.1)
_V: MathVerifier | None = None


def _verifier() -> MathVerifier:
    global _V
    if _V is None:
        _V = MathVerifier(VerifyConfig(step_scorer=None, embedding_model=None))
    return _V


def candidate_steps(r: dict) -> list[str]:
    last = r["next_response"]
    if r.get("answer"):
        last = f"{last}\n\n# Answer\n\n{r['answer']}"
    return [*r["responses"], last]


def featurize(args) -> tuple[list[float], list[int]] | None:
    question, steps, gold = args
    v = _verifier()
    try:
        a = v.analyze(question, steps, "")
        if len(a.steps) != len(steps):
            return None
        return step_features(question, a.steps, a.calcs, a.flags, gold, only=[len(a.steps) - 1])[0]
    except Exception:  # noqa: BLE001 - a row the analysis cannot read has no features
        return None


def ref_features(args):
    """Per-step features of one correct reference solution (all steps), and whether the symbolic channel
    alone already names a first erroneous step in it."""
    question, solution, gold = args
    v = _verifier()
    try:
        a = v.analyze(question, solution, gold)
        return step_features(question, a.steps, a.calcs, a.flags, gold), a.first_error_step is not None
    except Exception:  # noqa: BLE001
        return None


def read_rows(data: Path, limit: int | None, seed: int) -> tuple[list[dict], dict[str, str]]:
    """The rated PRM800K train rows, and the MATH train gold answers by :func:`problem_key`."""
    golds = {}
    for line in (data / "math" / "train.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        golds[problem_key(r["problem"])] = r["answer"]
    rows = []
    with gzip.open(data / "prm800k" / "phase1_train_plus.stepwise.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("rating") in (-1, 0, 1):
                rows.append(r)
    if limit and limit < len(rows):
        probs = sorted({r["instruction"] for r in rows})
        random.Random(seed).shuffle(probs)
        keep = set(probs[: max(20, int(len(probs) * limit / len(rows)))])
        rows = [r for r in rows if r["instruction"] in keep]
    return rows, golds


def problem_key(text: str) -> str:
    """A problem's text with its whitespace normalised (54 PRM800K problems differ from MATH's in whitespace only)."""
    return " ".join(text.split())


def build_matrix(feats: list[tuple[list[float], list[int]]], mean=None, scale=None):
    from scipy.sparse import csr_matrix, hstack

    dense = np.array([d for d, _ in feats], dtype=np.float64)
    if mean is None:
        mean = dense.mean(axis=0)
        scale = dense.std(axis=0)
        scale[scale == 0] = 1.0
    dz = (dense - mean) / scale
    indptr, idx = [0], []
    for _, h in feats:
        idx += h
        indptr.append(len(idx))
    hs = csr_matrix((np.ones(len(idx)), np.array(idx, dtype=np.int64), np.array(indptr)), shape=(len(feats), N_HASH))
    return hstack([csr_matrix(dz), hs]).tocsr(), mean, scale


def trajectories(rows: list[dict]) -> list[list[int | None]]:
    """For every rated row, the row indices of its trajectory's steps (the prefix steps, looked up as
    the rows that rated them in their own context, None when unrated, then the row itself)."""
    where = {(r["instruction"], tuple(r["responses"]), r["next_response"]): i for i, r in enumerate(rows)}
    out = []
    for i, r in enumerate(rows):
        pre = r["responses"]
        out.append([where.get((r["instruction"], tuple(pre[:k]), s)) for k, s in enumerate(pre)] + [i])
    return out


def first_error_scores(rows, trajs, probs, strong, t) -> tuple[float, float]:
    """(accuracy, F1) of the first rejected step (probability > t or a wrong calculation) against the first
    step rated -1, over trajectories. F1 is ProcessBench's: the harmonic mean of the exact-step accuracy on
    trajectories with an error and the no-error accuracy on those without."""
    hit = hit_err = hit_ok = n_err = 0
    for tr in trajs:
        gold = next((k for k, i in enumerate(tr) if i is not None and rows[i]["rating"] == -1), None)
        pred = next((k for k, i in enumerate(tr) if i is not None and (probs[i] > t or strong[i])), None)
        hit += gold == pred
        if gold is None:
            hit_ok += pred is None
        else:
            n_err += 1
            hit_err += pred == gold
    a_err = hit_err / n_err if n_err else 0.0
    a_ok = hit_ok / (len(trajs) - n_err) if len(trajs) > n_err else 0.0
    return hit / len(trajs), (2 * a_err * a_ok / (a_err + a_ok) if a_err + a_ok else 0.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "verifier" / "models" / f"{VERSION}.json"))
    ap.add_argument("--cache", default=None, help="gzip JSON file for the computed features (reused if present)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="about this many rows (whole problems)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-refs", type=int, default=300, help="MATH and GSM8K train references for the false-flag check")
    ap.add_argument("--max-ref-flag", type=float, default=0.04)
    ap.add_argument("--max-added-flag", type=float, default=0.02)
    ap.add_argument("--C", type=float, default=None, help="skip the C grid (C_GRID) and use this C")
    return ap.parse_args(argv)


def row_features(rows: list[dict], golds: dict[str, str], cache: Path | None, workers: int) -> list:
    """:func:`featurize` of every row (None where unreadable), read from / written to ``cache`` when given."""
    if cache and cache.exists():
        with gzip.open(cache, "rt") as f:
            cached = json.load(f)
        feats = [tuple(x) if x else None for x in cached["feats"]]
        assert len(feats) == len(rows), "feature cache does not match the rows"
        return feats
    jobs = [(r["instruction"], candidate_steps(r), golds.get(problem_key(r["instruction"]), "")) for r in rows]
    with mp.get_context("fork").Pool(workers) as pool:
        feats = pool.map(featurize, jobs, chunksize=64)
    if cache:
        with gzip.open(cache, "wt") as f:
            json.dump({"feats": feats}, f)
    return feats


def _logreg(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="liblinear", max_iter=200, random_state=seed)


def _out_of_fold(X, y, folds, C: float, seed: int) -> np.ndarray:
    oof = np.zeros(len(y))
    for tr, te in folds:
        m = _logreg(C, seed)
        m.fit(X[tr], y[tr])
        oof[te] = m.predict_proba(X[te])[:, 1]
    return oof


def fit_scorer(X, y, groups, C_fixed: float | None, seed: int):
    """C by grouped 5-fold CV on train (printed, with the dense-only AUROC); returns (auc, C, out-of-fold
    probabilities of that C, the model fitted on all rows)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    folds = list(GroupKFold(n_splits=5).split(X, y, groups))
    best = None
    for C in ((C_fixed,) if C_fixed else C_GRID):
        oof = _out_of_fold(X, y, folds, C, seed)
        auc = roc_auc_score(y, oof)
        print(f"C={C}: train 5-fold (grouped by problem) CV AUROC {auc:.4f}", flush=True)
        if best is None or auc > best[0]:
            best = (auc, C, oof)
    auc, C, oof = best
    dense_only = _out_of_fold(X[:, : len(DENSE)], y, folds, C, seed)
    print(f"dense features only: CV AUROC {roc_auc_score(y, dense_only):.4f}")
    return auc, C, oof, _logreg(C, seed).fit(X, y)


def reference_samples(data: Path, n_refs: int, seed: int, workers: int) -> dict[str, list]:
    """:func:`ref_features` of a seeded sample of ``n_refs`` MATH and GSM8K train references each."""
    refs = {}
    for name, rel, qk, sk, gk in (("MATH", "math/train.jsonl", "problem", "solution", "answer"),
                                  ("GSM8K", "gsm8k/train.jsonl", "question", "answer", None)):
        rr = [json.loads(x) for x in (data / rel).open(encoding="utf-8")]
        rr = random.Random(seed).sample(rr, min(n_refs, len(rr)))
        jobs = [(r[qk], r[sk], r[gk] if gk else r[sk].split("####")[-1].strip()) for r in rr]
        with mp.get_context("fork").Pool(workers) as pool:
            refs[name] = [x for x in pool.map(ref_features, jobs, chunksize=16) if x is not None]
    return refs


def choose_threshold(rows, chain_list, oof, strong, ref_p, ref_sym, max_ref_flag: float, max_added_flag: float):
    """The cut with the best out-of-fold first-error F1 (ties: the higher cut) among those within the
    false-flag limits on the references (else the highest cut): (t, accuracy, F1, MATH and GSM8K flag rates)."""
    grid = [round(x, 3) for x in np.arange(0.3, 0.99, 0.01)]
    rows_t = []
    for t in grid:
        acc, f1 = first_error_scores(rows, chain_list, oof, strong, t)
        ffs = {k: float(np.mean((ref_p[k] > t) | ref_sym[k])) for k in ref_p}
        added = max(ffs[k] - float(np.mean(ref_sym[k])) for k in ref_p)
        feasible = ffs["MATH"] <= max_ref_flag and added <= max_added_flag
        rows_t.append((t, acc, f1, ffs["MATH"], ffs["GSM8K"], feasible))
    ok = [r for r in rows_t if r[5]] or [max(rows_t, key=lambda r: r[0])]
    t, acc, f1, ff, ff_gsm, _ = max(ok, key=lambda r: (r[2], r[0]))
    return t, acc, f1, ff, ff_gsm


def scorer_json(a, model, mean, scale, y, C, auc, t, acc, f1, ff, ff_gsm, sym_ff) -> dict:
    """The contents of the model file (``<SCORER_VERSION>.json``)."""
    coef = model.coef_[0]
    return {
        "version": VERSION, "kind": "logistic_regression",
        "feature_spec": {"feature_version": FEATURE_VERSION, "dense": list(DENSE), "n_hash": N_HASH,
                         "hash": "zlib.crc32 of word unigrams/bigrams (verifier.learned.hashed_indices)"},
        "label": "rating == -1 (bad); 0 and +1 are not bad",
        "mean": [round(float(x), 6) for x in mean], "scale": [round(float(x), 6) for x in scale],
        "dense_coef": [round(float(x), 5) for x in coef[: len(DENSE)]],
        "hash_coef": [round(float(x), 4) for x in coef[len(DENSE):]],
        "intercept": round(float(model.intercept_[0]), 6), "threshold": t,
        "meta": {"data": "PRM800K phase1_train_plus (MATH train problems)", "n_steps": int(len(y)),
                 "n_bad": int(y.sum()), "C": C, "C_grid": list(C_GRID), "seed": a.seed, "cv_auroc": round(float(auc), 4),
                 "cv": "5-fold GroupKFold by problem",
                 "train_first_error_accuracy": round(acc, 4), "train_first_error_f1": round(f1, 4), "train_ref_flag_rate": {"MATH": round(ff, 4), "GSM8K": round(ff_gsm, 4)}, "train_ref_flag_rate_symbolic": sym_ff,
                 "threshold_rule": f"max OOF first-error F1 (ProcessBench-style) on train trajectories with <= "
                                   f"{a.max_ref_flag} of {a.n_refs} MATH train references given a first error "
                                   f"(either channel) and <= {a.max_added_flag} more than the symbolic channel "
                                   f"alone on MATH and on {a.n_refs} GSM8K train references",
                 "sklearn": __import__("sklearn").__version__},
    }


def main() -> None:
    a = parse_args()
    data = Path(a.data)
    t0 = time.perf_counter()
    rows, golds = read_rows(data, a.limit, a.seed)
    feats = row_features(rows, golds, Path(a.cache) if a.cache else None, a.workers)
    print(f"{len(rows)} rated steps, {sum(f is None for f in feats)} unreadable, features in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    keep = [i for i, f in enumerate(feats) if f is not None]
    rows = [rows[i] for i in keep]
    feats = [feats[i] for i in keep]
    y = np.array([int(r["rating"] == -1) for r in rows])
    groups = np.array([zlib.crc32(r["instruction"].encode("utf-8")) for r in rows])  # stable across runs
    X, mean, scale = build_matrix(feats)
    print(f"bad steps: {y.sum()} of {len(y)} ({y.mean():.3f})")
    auc, C, oof, model = fit_scorer(X, y, groups, a.C, a.seed)

    # threshold: first-error accuracy on the train chains (out-of-fold), false flags on MATH train references
    d_idx = {n: k for k, n in enumerate(DENSE)}
    strong = [bool(f[0][d_idx["calc_wrong_any"]] or f[0][d_idx["alg_wrong"]]) for f in feats]
    chain_list = trajectories(rows)
    samples = reference_samples(data, a.n_refs, a.seed, a.workers)

    def ref_max(feats_r):
        if not feats_r:
            return 0.0
        Xr, _, _ = build_matrix(feats_r, mean, scale)
        return float(model.predict_proba(Xr)[:, 1].max())

    ref_p = {k: np.array([ref_max(fr) for fr, _ in v]) for k, v in samples.items()}
    ref_sym = {k: np.array([s for _, s in v]) for k, v in samples.items()}
    t, acc, f1, ff, ff_gsm = choose_threshold(rows, chain_list, oof, strong, ref_p, ref_sym, a.max_ref_flag,
                                              a.max_added_flag)
    sym_ff = {k: round(float(np.mean(v)), 4) for k, v in ref_sym.items()}
    base_acc, base_f1 = first_error_scores(rows, chain_list, oof, strong, 2.0)
    print(f"{len(chain_list)} train trajectories: first-error accuracy / F1 symbolic only {base_acc:.4f} / "
          f"{base_f1:.4f}; with the scorer at threshold {t}: {acc:.4f} / {f1:.4f}; MATH train references "
          f"flagged: MATH {ff:.4f}, GSM8K {ff_gsm:.4f} (symbolic alone {sym_ff}, n={a.n_refs} each)")
    out = scorer_json(a, model, mean, scale, y, C, auc, t, acc, f1, ff, ff_gsm, sym_ff)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {a.out} ({Path(a.out).stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
