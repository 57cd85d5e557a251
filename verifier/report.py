"""Verifier quality report: human step labels (PRM800K) and error-injected GSM8K/synthetic solutions.

(a) PRM800K phase-1 test (``prm800k/phase1_test.stepwise.jsonl``): every rated candidate step is scored in
its context (the chosen prefix + the candidate); the step error score is the largest flag severity on that
step (a stated final answer that differs from the MATH gold counts 1.0). Reported: AUROC against human
``-1`` ratings (0 and +1 are negatives), and trajectory-level precision/recall of "incorrect" (a trajectory
is incorrect when any of its steps is rated -1; predicted incorrect when any step scores >= 0.5).

(b) Error injection on GSM8K train reference answers and seeded synthetic word problems: a wrong
calculation, swapped steps, a dropped step, a wrong final answer, truncation, repetition and an irrelevant
sentence. Reported: per-dimension detection rate (target dimension >= 0.3 and above the clean solution's
value), scored alone and with the reference answer passed as ``reference`` (as the verify stage does),
false-flag rates on clean solutions (both ways), and first-error-step accuracy with and without the reference.

Writes ``verifier_report.json`` and ``verifier_report.md`` into ``out_dir``. Example JSON (abridged)::

    {"prm800k": {"n_steps": 5082, "auroc": 0.61, "precision": 0.55, "recall": 0.31},
     "injection": {"wrong_calc": {"n": 300, "target": "symbolic_validity", "detection_rate": 0.97, ...}}}
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import defaultdict
from pathlib import Path

from verifier.answers import answer_candidates, answers_equal
from verifier.core import MathVerifier
from verifier.steps import split_steps
from verifier.verdict import DIMENSIONS

THRESHOLD = 0.3
IRRELEVANT = [
    "The weather in Paris is usually mild and pleasant during the spring season.",
    "Many people enjoy listening to classical music while reading a good novel.",
    "Elephants are the largest land animals and live in herds led by a matriarch.",
]


# ---------------------------------------------------------------- metrics
def auroc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None if one class is empty."""
    import numpy as np

    return _rank_auroc(np.asarray(scores, dtype=float), np.asarray(labels, dtype=int))


def _rank_auroc(s, y) -> float | None:
    """:func:`auroc` on numpy arrays (``y`` in {0, 1}); the bootstrap calls it on every resample."""
    from scipy.stats import rankdata

    pos = int(y.sum())
    neg = len(y) - pos
    if not pos or not neg:
        return None
    return float((rankdata(s)[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auroc_interval(scores: list[float], labels: list[int], groups: list, n_boot: int = 1000,
                   seed: int = 0) -> dict | None:
    """The AUROC's sampling noise when whole problems are the unit of sampling (the steps of one problem are
    not independent): a percentile bootstrap over ``groups`` (``n_boot`` resamples of the problems with
    replacement, seeded), with its standard deviation and the smallest AUROC difference that a test of this
    size detects against a fixed value (two-sided 5%, 80% power: 2.8 standard deviations). None when a class
    is empty or there are fewer than two groups."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    keys = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    gid = np.array([keys[g] for g in groups])
    if len(keys) < 2 or y.min(initial=1) == y.max(initial=0):
        return None
    members = [np.flatnonzero(gid == k) for k in range(len(keys))]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        take = np.concatenate([members[k] for k in rng.integers(0, len(keys), len(keys))])
        a = _rank_auroc(s[take], y[take])
        if a is not None:
            out.append(a)
    if len(out) < n_boot // 2:
        return None
    lo, hi = np.percentile(out, [2.5, 97.5])
    sd = float(np.std(out, ddof=1))
    return {"ci95": [_r(float(lo)), _r(float(hi))], "sd": _r(sd), "mde_80": _r(2.8 * sd),
            "n_groups": len(keys), "n_boot": n_boot, "seed": seed, "unit": "problem"}


def prf(pred: list[bool], gold: list[bool]) -> dict:
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "n": len(pred), "n_positive": sum(gold), "n_predicted": sum(pred)}


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- (a) PRM800K
def prm_steps(r: dict) -> list[str]:
    """A PRM800K stepwise row as steps: the chosen prefix and the candidate, with the row's final answer
    appended as the ``# Answer`` heading that the original PRM800K steps carry."""
    last = r["next_response"]
    if r.get("answer"):
        last = f"{last}\n\n# Answer\n\n{r['answer']}"
    return [*r["responses"], last]


def _flag_scores(a) -> list[float]:
    out = [0.0] * len(a.steps)
    for f in a.flags:
        if 0 <= f.step < len(out):
            out[f.step] = max(out[f.step], f.severity)
    return out


def _key(text: str) -> str:
    return " ".join(text.split())


def prm800k_eval(data_root: Path, verifier: MathVerifier, limit: int | None, seed: int,
                 with_reference: bool = False) -> dict:
    """Step AUROC and first-error agreement on PRM800K phase-1 test (each rated row: its chosen prefix + the
    candidate), with the MATH-500 gold answer (given for every row, as the verify stage has it for every
    sample; an unfinished prefix is ``partial``: not graded as a wrong answer) and, when ``with_reference``,
    its reference solution."""
    path = data_root / "prm800k" / "phase1_test.stepwise.jsonl"
    rows = [r for r in _read_jsonl(path) if r.get("rating") in (-1, 0, 1)]
    golds, refs = {}, {}
    m500 = data_root / "math" / "math500.jsonl"
    if m500.exists():
        golds = {_key(r["problem"]): r["answer"] for r in _read_jsonl(m500)}
        refs = {_key(r["problem"]): r["solution"] for r in _read_jsonl(m500)} if with_reference else {}
    rating: dict[tuple, int] = {}
    for r in rows:
        rating[(r["instruction"], tuple(r["responses"]), r["next_response"])] = r["rating"]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    scores, sym_scores, labels, traj_pred, traj_gold, with_calc = [], [], [], [], [], []
    fe_gold, fe_pred, final_rows = [], [], []
    n_failed = 0
    for r in rows:
        steps = prm_steps(r)
        gold = golds.get(_key(r["instruction"]), "")
        has_answer = bool(answer_candidates(steps[-1]))
        try:
            a = verifier.analyze(r["instruction"], steps, gold, refs.get(_key(r["instruction"])), partial=not has_answer)
        except Exception:  # noqa: BLE001 - score() would return an error verdict: count it, score 0
            n_failed += 1
            a = None
        step_scores = a.step_scores() if a else []
        flag_scores = _flag_scores(a) if a else []
        last = len(steps) - 1
        if len(step_scores) != len(steps):  # an empty step was dropped: align on the candidate
            step_scores = step_scores + [0.0] * (len(steps) - len(step_scores))
            flag_scores = flag_scores + [0.0] * (len(steps) - len(flag_scores))
        s, s_sym = step_scores[last], flag_scores[last]
        wrong_answer = bool(a) and has_answer and bool(gold) and not a.correct
        if wrong_answer:
            s, s_sym = max(s, 1.0), max(s_sym, 1.0)
        scores.append(s)
        sym_scores.append(s_sym)
        labels.append(int(r["rating"] == -1))
        with_calc.append(bool(a and a.calcs and a.calcs[-1]))
        prefix = [rating.get((r["instruction"], tuple(r["responses"][:k]), step))
                  for k, step in enumerate(r["responses"])]
        prefix_bad = any(x == -1 for x in prefix)
        traj_gold.append(prefix_bad or r["rating"] == -1)
        traj_pred.append(max(step_scores, default=0.0) >= 0.5 or wrong_answer)
        gold_first = next((k for k, x in enumerate(prefix) if x == -1), last if r["rating"] == -1 else None)
        fe_gold.append(gold_first)
        fe_pred.append(a.first_error_step if a else None)
        if has_answer and gold:
            final_rows.append(len(fe_gold) - 1)
    calc_idx = [i for i, c in enumerate(with_calc) if c]
    out = {
        "n_steps": len(rows), "n_bad": sum(labels), "n_failed": n_failed,
        "auroc": _r(auroc(scores, labels)),
        "auroc_interval": auroc_interval(scores, labels, [_key(r["instruction"]) for r in rows], seed=seed),
        "auroc_symbolic_only": _r(auroc(sym_scores, labels)),
        "auroc_steps_with_calculation": _r(auroc([scores[i] for i in calc_idx], [labels[i] for i in calc_idx])),
        "n_steps_with_calculation": len(calc_idx),
        "flag_rate_bad": _r(_mean([s >= 0.5 for s, y in zip(scores, labels, strict=True) if y])),
        "flag_rate_ok": _r(_mean([s >= 0.5 for s, y in zip(scores, labels, strict=True) if not y])),
        "trajectory": prf(traj_pred, traj_gold),
        "first_error": first_error_metrics(fe_pred, fe_gold),
        # complete solutions (the candidate states the final answer): the closest to ProcessBench's setting
        "first_error_final": first_error_metrics([fe_pred[i] for i in final_rows], [fe_gold[i] for i in final_rows]),
        "with_reference": with_reference,
    }
    return out


def first_error_metrics(pred: list[int | None], gold: list[int | None]) -> dict:
    """First-error-step agreement over trajectories: ``accuracy`` (equal, None = no error counts), and
    precision/recall/F1 of located errors (a true positive is a predicted step equal to the gold step)."""
    tp = sum(p is not None and p == g for p, g in zip(pred, gold, strict=True))
    n_pred = sum(p is not None for p in pred)
    n_gold = sum(g is not None for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    acc = sum(p == g for p, g in zip(pred, gold, strict=True)) / len(pred) if pred else None
    # ProcessBench's F1: harmonic mean of the exact-step accuracy on trajectories with an error and the
    # no-error accuracy on those without
    a_err = tp / n_gold if n_gold else 0.0
    n_ok = len(gold) - n_gold
    a_ok = sum(p is None and g is None for p, g in zip(pred, gold, strict=True)) / n_ok if n_ok else 0.0
    pb = 2 * a_err * a_ok / (a_err + a_ok) if a_err + a_ok else 0.0
    return {"accuracy": _r(acc), "precision": _r(precision), "recall": _r(recall), "f1": _r(f1),
            "accuracy_erroneous": _r(a_err), "accuracy_correct": _r(a_ok), "f1_processbench": _r(pb),
            "n": len(pred), "n_gold_error": n_gold, "n_predicted": n_pred}


# ---------------------------------------------------------------- correct references, answers, speed
def false_flag_eval(data_root: Path, verifier: MathVerifier, n: int, seed: int) -> dict:
    """Shares of correct reference solutions (GSM8K and MATH *train*) that the verifier calls unsound (a
    first erroneous step), flags on any process dimension, or judges incorrect."""
    out = {}
    for name, rel, q, s, g in (("gsm8k", "gsm8k/train.jsonl", "question", "answer", None),
                               ("math", "math/train.jsonl", "problem", "solution", "answer")):
        path = data_root / rel
        if not path.exists():
            continue
        rows = random.Random(seed).sample(_read_jsonl(path), n)
        unsound = anyflag = wrong = learned = 0
        for r in rows:
            gold = r[g] if g else r[s].split("####")[-1].strip()
            v = verifier.score(r[q], r[s], gold)
            unsound += v.first_error_step is not None
            anyflag += any(x > 0 for k, x in v.dims.items() if k != "answer_correctness")
            wrong += not v.correct
            learned += any("learned step scorer rejects" in x for x in v.notes)
        out[name] = {"n": len(rows), "first_error_flagged": _r(unsound / len(rows)),
                     "learned_rejects": _r(learned / len(rows)),
                     "any_process_dimension": _r(anyflag / len(rows)), "judged_incorrect": _r(wrong / len(rows))}
    return out


def _bench(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def answer_equivalence_eval() -> dict:
    """``answers_equal`` on the labelled suite(s) ``tests/verifier/answer_cases*.jsonl``
    (:mod:`benchmarks.answer_equivalence`): agreement with the labels, per style, and comparisons/s."""
    from verifier.answers import answers_equal

    bench = _bench("answer_equivalence")
    files = sorted(Path(bench.CASES).parent.glob("answer_cases*.jsonl"))
    cases = [c for f in files for c in bench.load(f)]
    if not cases:
        return {}
    t = time.perf_counter()
    got = [bool(answers_equal(c["gold"], c["pred"])) for c in cases]
    secs = time.perf_counter() - t
    out = {"n": len(cases), "files": [f.name for f in files],
           "agreement": _r(_mean(g == c["equal"] for g, c in zip(got, cases, strict=True))),
           "false_equal": sum(g and not c["equal"] for g, c in zip(got, cases, strict=True)),
           "false_not_equal": sum(c["equal"] and not g for g, c in zip(got, cases, strict=True)),
           "comparisons_per_s": round(len(cases) / secs, 1) if secs else None}
    for style in sorted({c.get("style", "") for c in cases}):
        idx = [i for i, c in enumerate(cases) if c.get("style", "") == style]
        out[f"agreement_{style or 'other'}"] = _r(_mean(got[i] == cases[i]["equal"] for i in idx))
    return out


def throughput_eval(data_root: Path, verifier: MathVerifier, n: int) -> dict:
    """``MathVerifier.score`` solutions/s in one process (wall clock and CPU time) on GSM8K test reference
    answers (GSM8K-style) and MATH-500 reference solutions (MATH-style); 2 cores give about twice the CPU rate."""
    out = {}
    emb = verifier._embedder
    if emb is not None and not emb.loaded:  # the one-off model load is not throughput
        t = time.perf_counter()
        _ = emb.available
        out["embedding_load_s"] = round(time.perf_counter() - t, 2)
    for name, rel, q, s, g in (("gsm8k_style", "gsm8k/test.jsonl", "question", "answer", None),
                               ("math_style", "math/math500.jsonl", "problem", "solution", "answer")):
        path = data_root / rel
        if not path.exists():
            continue
        items = [{"question": r[q], "solution": r[s], "gold": r[g] if g else r[s].split("####")[-1].strip()}
                 for r in _read_jsonl(path)[:n]]
        verifier.score(**items[0])
        t, c = time.perf_counter(), time.process_time()
        for it in items:
            verifier.score(**it)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        out[name] = {"n": len(items), "per_s_wall": round(len(items) / wall, 1),
                     "per_s_cpu": round(len(items) / cpu, 1) if cpu else None}
    return out


def aggregation_eval(data_root: Path, verifier: MathVerifier, n: int, seed: int) -> dict:
    """Solution-level validation of the aggregation on PRM800K phase-1 TRAIN (never test): trajectories
    (the chosen prefix + a rated candidate; complete solutions alone hold almost no -1 step, since labellers
    stop at one), label = some step rated -1; the gold answer is passed when the trajectory states one.
    AUROC of wrongness, absurdity, process wrongness (no answer_correctness) and each dimension."""
    import gzip

    path = data_root / "prm800k" / "phase1_train_plus.stepwise.jsonl.gz"
    if not path.exists():
        return {}
    golds = {r["problem"]: r["answer"] for r in _read_jsonl(data_root / "math" / "train.jsonl")}
    rows, rating = [], {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("rating") in (-1, 0, 1):
                rating[(r["instruction"], tuple(r["responses"]), r["next_response"])] = r["rating"]
                rows.append(r)
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    from verifier.core import aggregate

    labels, series = [], defaultdict(list)
    w_proc = {d: (0.0 if d == "answer_correctness" else getattr(verifier.config.wrongness, d)) for d in DIMENSIONS}
    for r in rows:
        bad = r["rating"] == -1 or any(rating.get((r["instruction"], tuple(r["responses"][:k]), st)) == -1
                                       for k, st in enumerate(r["responses"]))
        steps = prm_steps(r)
        v = verifier.score(r["instruction"], steps, golds.get(r["instruction"], "") if r.get("answer") else "")
        labels.append(int(bad))
        series["wrongness"].append(v.wrongness)
        series["absurdity"].append(v.absurdity)
        series["process_wrongness"].append(aggregate(v.dims, w_proc))
        series["first_error_located"].append(float(v.first_error_step is not None))
        for d in DIMENSIONS:
            series[d].append(v.dims[d])
    out = {"n": len(rows), "n_bad": sum(labels),
           "auroc": {k: _r(auroc(x, labels)) for k, x in series.items()}}
    return out


# ---------------------------------------------------------------- (b) injection
_ANN_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>(\$?)([-\d.,]+)")


def synthetic_problems(n: int, seed: int) -> list[dict]:
    """Seeded GSM8K-style problems with worked answers in GSM8K format (``<<a=b>>``, ``#### n``)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        a, b, c, d = rng.randint(5, 40), rng.randint(2, 9), rng.randint(3, 12), rng.randint(2, 15)
        name = rng.choice(["Maya", "Omar", "Lena", "Kofi", "Ines"])
        t = k % 3
        if t == 0:
            q = (f"{name} has {a} apples. She buys {b} bags with {c} apples in each bag, then gives {d} apples "
                 f"to a friend. How many apples does she have now?")
            bc, tot = b * c, a + b * c
            ans = (f"The bags hold {b}*{c} = <<{b}*{c}={bc}>>{bc} apples.\n"
                   f"Now she has {a}+{bc} = <<{a}+{bc}={tot}>>{tot} apples.\n"
                   f"After giving some away she has {tot}-{d} = <<{tot}-{d}={tot - d}>>{tot - d} apples.\n"
                   f"#### {tot - d}")
        elif t == 1:
            q = (f"A ticket costs ${c}. {name} buys {b} tickets for the family and {d} more for friends. "
                 f"She pays with ${(b + d) * c + a}. How much change does she get?")
            n_t, cost, pay = b + d, (b + d) * c, (b + d) * c + a
            ans = (f"{name} buys {b}+{d} = <<{b}+{d}={n_t}>>{n_t} tickets.\n"
                   f"They cost {n_t}*{c} = $<<{n_t}*{c}={cost}>>{cost}.\n"
                   f"Her change is {pay}-{cost} = $<<{pay}-{cost}={a}>>{a}.\n#### {a}")
        else:
            q = (f"{name} reads {c} pages a day for {b} days, then {d} pages a day for {b + 1} days. "
                 f"How many pages does {name} read in total?")
            p1, p2 = b * c, d * (b + 1)
            ans = (f"First {name} reads {c}*{b} = <<{c}*{b}={p1}>>{p1} pages.\n"
                   f"Then {name} reads {d}*{b + 1} = <<{d}*{b + 1}={p2}>>{p2} pages.\n"
                   f"In total {p1}+{p2} = <<{p1}+{p2}={p1 + p2}>>{p1 + p2} pages.\n#### {p1 + p2}")
        out.append({"question": q, "answer": ans, "source": "synthetic"})
    return out


def _ann_steps(steps: list[str]) -> list[tuple[int, str, str]]:
    """(step, lhs, result) for every annotated step (first annotation of the step)."""
    out = []
    for i, s in enumerate(steps):
        m = _ANN_RE.search(s)
        if m:
            out.append((i, m.group(1), m.group(2)))
    return out


def _uses(step: str, value: str) -> bool:
    return any(re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", m.group(1)) for m in _ANN_RE.finditer(step))


Injected = tuple[list[str], int | None] | None  # the injected steps and the expected first erroneous step


def inject(kind: str, steps: list[str], rng: random.Random) -> Injected:
    """An injected copy of ``steps`` and the expected first erroneous step (None: not defined), or None
    when the solution has nothing to inject this kind of error into."""
    if kind not in _INJECTORS:
        raise ValueError(kind)
    body = [s for s in steps if not s.startswith("####")]
    final = [s for s in steps if s.startswith("####")]
    return _INJECTORS[kind](body, final, steps, rng)


def _bumped(val: float, share: float) -> str:
    """``val`` plus ``share`` of it (at least 1), written as GSM8K writes numbers."""
    new = val + max(1, round(abs(val) * share))
    return str(int(new)) if new == int(new) else f"{new:g}"


def _wrong_calc(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    anns = _ann_steps(body)
    if not anns:
        return None
    i, lhs, res = rng.choice(anns)
    try:
        new_s = _bumped(float(res.replace(",", "")), 0.2)
    except ValueError:
        return None
    m = _ANN_RE.search(body[i])
    body = list(body)
    body[i] = body[i][:m.start()] + f"<<{lhs}={new_s}>>{m.group(3)}{new_s}" + body[i][m.end():]
    return body + final, i


def _swapped(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    anns = _ann_steps(body)
    pairs = [(i, j) for (i, _, r) in anns for (j, _, _) in anns if j == i + 1 and _uses(body[j], r)]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    body = list(body)
    body[i], body[j] = body[j], body[i]
    return body + final, i


def _dropped(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    anns = _ann_steps(body)
    cands = [(i, j) for (i, _, r) in anns for (j, _, _) in anns if j > i and _uses(body[j], r)]
    if not cands:
        return None
    i, j = rng.choice(cands)
    return body[:i] + body[i + 1:] + final, j - 1


def _wrong_final(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    m = re.match(r"####\s*(-?[\d,.]+)", final[-1]) if final else None
    if not m:
        return None
    try:
        new_s = _bumped(float(m.group(1).replace(",", "")), 0.3)
    except ValueError:
        return None
    return body + [f"#### {new_s}"], len(body)


def _truncated(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    text = "\n".join(steps)
    cut = int(len(text) * rng.uniform(0.4, 0.7))
    while cut < len(text) and text[cut - 1].isdigit():
        cut += 1  # do not end on a complete number by accident
    cut = max(1, cut - 3)
    return split_steps(text[:cut]), None


def _repetition(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    if not body:
        return None
    i = rng.randrange(len(body))
    return body[:i + 1] + [body[i]] * 3 + body[i + 1:] + final, None


def _irrelevant(body: list[str], final: list[str], steps: list[str], rng: random.Random) -> Injected:
    i = rng.randrange(len(body) + 1)
    return body[:i] + [rng.choice(IRRELEVANT)] + body[i:] + final, None


_INJECTORS = {"wrong_calc": _wrong_calc, "swapped": _swapped, "dropped": _dropped, "wrong_final": _wrong_final,
              "truncated": _truncated, "repetition": _repetition, "irrelevant": _irrelevant}


TARGETS = {
    "wrong_calc": "symbolic_validity", "swapped": "step_ordering", "dropped": "logical_consistency",
    "wrong_final": "answer_correctness", "truncated": "structural_integrity",
    "repetition": "structural_integrity", "irrelevant": "semantic_alignment",
}


def injection_eval(data_root: Path, verifier: MathVerifier, limit: int | None, seed: int) -> dict:
    n = limit if limit is not None else 300
    rng = random.Random(seed)
    gsm = _read_jsonl(data_root / "gsm8k" / "train.jsonl")
    probs = [dict(r, source="gsm8k") for r in rng.sample(gsm, min(n, len(gsm)))]
    probs += synthetic_problems(max(3, n // 3), seed)
    clean_flags: dict[str, list[bool]] = defaultdict(list)
    clean_flags_ref: dict[str, list[bool]] = defaultdict(list)
    clean_correct = []
    res: dict[str, dict[str, list]] = {k: defaultdict(list) for k in TARGETS}
    for p in probs:
        gold = p["answer"].split("####")[-1].strip()
        steps = split_steps(p["answer"])
        clean = verifier.score(p["question"], steps, gold)
        clean_ref = verifier.score(p["question"], steps, gold, reference=p["answer"])
        clean_correct.append(clean.correct)
        for d in DIMENSIONS:
            clean_flags[d].append(clean.dims[d] >= THRESHOLD)
            clean_flags_ref[d].append(clean_ref.dims[d] >= THRESHOLD)
        for kind, target in TARGETS.items():
            got = inject(kind, steps, rng)
            if got is None:
                continue
            bad, expected = got
            v = verifier.score(p["question"], bad, gold)
            r = res[kind]
            r["detected"].append(v.dims[target] >= THRESHOLD and v.dims[target] > clean.dims[target])
            r["wrongness_delta"].append(v.wrongness - clean.wrongness)
            r["any_dim"].append(any(v.dims[d] >= THRESHOLD and v.dims[d] > clean.dims[d] for d in DIMENSIONS))
            vr = verifier.score(p["question"], bad, gold, reference=p["answer"])
            r["detected_ref"].append(vr.dims[target] >= THRESHOLD and vr.dims[target] > clean_ref.dims[target])
            if expected is not None:
                r["first_error"].append(v.first_error_step == expected)
                r["first_error_ref"].append(vr.first_error_step == expected)
    out: dict = {
        "n_problems": len(probs), "n_gsm8k": sum(p["source"] == "gsm8k" for p in probs),
        "n_synthetic": sum(p["source"] == "synthetic" for p in probs),
        "clean_correct_rate": _r(_mean(clean_correct)),
        "clean_flag_rate": {d: _r(_mean(v)) for d, v in clean_flags.items()},
        "clean_flag_rate_with_reference": {d: _r(_mean(v)) for d, v in clean_flags_ref.items()},
    }
    for kind, r in res.items():
        out[kind] = {
            "target": TARGETS[kind], "n": len(r["detected"]),
            "detection_rate": _r(_mean(r["detected"])), "any_dimension_rate": _r(_mean(r["any_dim"])),
            "detection_rate_with_reference": _r(_mean(r["detected_ref"])),
            "mean_wrongness_increase": _r(_mean(r["wrongness_delta"])),
            "first_error_accuracy": _r(_mean(r["first_error"])) if r["first_error"] else None,
            "first_error_accuracy_with_reference": _r(_mean(r["first_error_ref"])) if r["first_error_ref"] else None,
        }
    return out


# ---------------------------------------------------------------- report
def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(float(x) for x in xs) / len(xs) if xs else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def to_markdown(rep: dict) -> str:
    info = rep.get("verifier", {})
    lines = ["# MathVerifier quality report", "",
             f"verifier version {info.get('verifier_version')} (step scorer {info.get('step_scorer')}, threshold "
             f"{info.get('step_threshold')}; embeddings {info.get('embedding_model')}); "
             f"seed {rep['seed']}, limit {rep['limit']}, {rep['seconds']:.1f} s", "",
             "## PRM800K phase-1 test (human step labels)", ""]
    lines += _md_prm800k(rep["prm800k"])
    lines += ["## Error injection (GSM8K train references + synthetic problems)", ""]
    lines += _md_injection(rep["injection"])
    lines += _md_gsm8k_proxy(rep.get("gsm8k_first_error") or {})
    lines += _md_false_flags(rep.get("false_flags") or {})
    lines += _md_answer_equivalence(rep.get("answer_equivalence") or {})
    lines += _md_throughput(rep.get("throughput") or {})
    lines += _md_aggregation(rep.get("aggregation_train") or {})
    return "\n".join(lines) + "\n"


def _md_prm800k(p: dict) -> list[str]:
    if not p:
        return ["(not run: data missing)", ""]
    t = p["trajectory"]
    fe = p.get("first_error", {})
    return [
        "| metric | value |", "| --- | --- |",
        f"| rated steps (bad = -1) | {p['n_steps']} ({p['n_bad']}) |",
        f"| step AUROC (error score vs -1) | {p['auroc']}{_md_interval(p.get('auroc_interval'))} |",
        f"| step AUROC, symbolic channel only | {p.get('auroc_symbolic_only')} |",
        f"| first-error step accuracy / precision / recall / F1 | {fe.get('accuracy')} / {fe.get('precision')} "
        f"/ {fe.get('recall')} / {fe.get('f1')} (n={fe.get('n')}, with an error {fe.get('n_gold_error')}) |",
        f"| first-error ProcessBench F1 (exact step on erroneous / none on clean) | {fe.get('f1_processbench')} "
        f"({fe.get('accuracy_erroneous')} / {fe.get('accuracy_correct')}) |",
        *_md_first_error_rows("complete solutions (the candidate states the final answer)", p.get("first_error_final")),
        *_md_first_error_rows("with the MATH-500 reference solution", (p.get("reference") or {}).get("first_error")),
        *_md_first_error_rows("complete solutions, with the reference",
                              (p.get("reference") or {}).get("first_error_final")),
        f"| step AUROC, steps with a calculation ({p['n_steps_with_calculation']}) | "
        f"{p['auroc_steps_with_calculation']} |",
        f"| flag rate (score >= 0.5) on bad / other steps | {p['flag_rate_bad']} / {p['flag_rate_ok']} |",
        f"| trajectory 'incorrect' precision / recall / F1 | {t['precision']} / {t['recall']} / {t['f1']} "
        f"(n={t['n']}, positives {t['n_positive']}) |", ""]


def _md_interval(iv: dict | None) -> str:
    if not iv:
        return ""
    return (f" (95% CI {iv['ci95'][0]}-{iv['ci95'][1]}, bootstrap over {iv['n_groups']} problems; detectable "
            f"difference at 80% power {iv['mde_80']})")


def _md_first_error_rows(label: str, fe: dict | None) -> list[str]:
    if not fe:
        return []
    return [f"| first-error ProcessBench F1, {label} (n={fe['n']}, with an error {fe['n_gold_error']}) | "
            f"{fe['f1_processbench']} ({fe['accuracy_erroneous']} / {fe['accuracy_correct']}) |"]


def _md_gsm8k_proxy(px: dict) -> list[str]:
    if not px:
        return []
    lines = ["## First erroneous step, GSM8K-style (verifier.gsm8k_proxy)", "",
             f"{px['n_problems']} GSM8K train references without their annotations: an arithmetic slip or a wrong "
             "operand at one step, carried forward to a wrong final answer, and the clean reference.", "",
             "| errors | reference given | n (with an error) | exact first step (erroneous) | none named (clean) "
             "| ProcessBench F1 |", "| --- | --- | --- | --- | --- | --- |"]
    for key, ref in (("without_reference", "no"), ("with_reference", "yes")):
        for kind, m in (px.get(key) or {}).items():
            lines.append(f"| {kind} | {ref} | {m['n']} ({m['n_gold_error']}) | {m['accuracy_erroneous']} | "
                         f"{m['accuracy_correct']} | {m['f1_processbench']} |")
    return lines + [""]


def _md_injection(inj: dict) -> list[str]:
    if not inj:
        return []
    lines = [f"{inj['n_problems']} problems ({inj['n_gsm8k']} GSM8K, {inj['n_synthetic']} synthetic); "
             f"clean references judged correct: {inj['clean_correct_rate']}", "",
             "| injection | n | target dimension | detection | detection (with reference) | any dimension "
             "| first-error acc. | first-error acc. (with reference) | mean wrongness increase |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind in TARGETS:
        r = inj[kind]
        lines.append(f"| {kind} | {r['n']} | {r['target']} | {r['detection_rate']} "
                     f"| {r.get('detection_rate_with_reference')} | {r['any_dimension_rate']} "
                     f"| {r['first_error_accuracy']} | {r['first_error_accuracy_with_reference']} "
                     f"| {r['mean_wrongness_increase']} |")
    lines += ["", f"False-flag rate on clean references (dimension >= {THRESHOLD}; scored alone, and with the "
              "reference passed as reference):", "",
              "| dimension | rate | rate (with reference) |", "| --- | --- | --- |"]
    with_ref = inj.get("clean_flag_rate_with_reference", {})
    return lines + [f"| {d} | {v} | {with_ref.get(d)} |" for d, v in inj["clean_flag_rate"].items()]


def _md_false_flags(ff: dict) -> list[str]:
    if not ff:
        return []
    return ["", "## Correct reference solutions (train splits): false flags", "",
            "| set | n | first error located | learned scorer rejects a step | any process dimension > 0 "
            "| judged incorrect |", "| --- | --- | --- | --- | --- | --- |"] + [
        f"| {k} | {v['n']} | {v['first_error_flagged']} | {v['learned_rejects']} | "
        f"{v['any_process_dimension']} | {v['judged_incorrect']} |" for k, v in ff.items()]


def _md_answer_equivalence(ans: dict) -> list[str]:
    if not ans:
        return []
    per = ", ".join(f"{k[len('agreement_'):]} {v}" for k, v in ans.items() if k.startswith("agreement_"))
    return ["", "## Answer equivalence suite", "",
            f"{ans['n']} cases ({', '.join(ans['files'])}): agreement {ans['agreement']} ({per}); "
            f"false equal {ans['false_equal']}, false not-equal {ans['false_not_equal']}; "
            f"{ans['comparisons_per_s']} comparisons/s"]


def _md_throughput(thr: dict) -> list[str]:
    if not thr:
        return []
    return ["", "## Throughput (MathVerifier.score, one process)", "",
            "| inputs | n | solutions/s (wall) | solutions/s (CPU time) |", "| --- | --- | --- | --- |"] + [
        f"| {k} | {v['n']} | {v['per_s_wall']} | {v['per_s_cpu']} |" for k, v in thr.items() if isinstance(v, dict)]


def _md_aggregation(agg: dict) -> list[str]:
    if not agg:
        return []
    return ["", f"## Aggregation on PRM800K train ({agg['n']} complete solutions, {agg['n_bad']} with a -1 step)",
            "", "| score | AUROC |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in agg["auroc"].items()]


PUBLISHED_DIR = Path(__file__).resolve().parent / "models"


def published_path(version: int) -> Path:
    """Where the measured report of verifier version ``version`` ships (``verifier/models/``)."""
    return PUBLISHED_DIR / f"verifier_report.v{version}.json"


def headline(rep: dict) -> dict[str, float]:
    """The report's headline numbers as flat metrics (the verify stage logs them next to its verdicts)."""
    prm, ff = rep.get("prm800k") or {}, rep.get("false_flags") or {}
    ref = prm.get("reference") or {}
    vals = {
        "prm800k_step_auroc": prm.get("auroc"),
        "prm800k_first_error_f1": (prm.get("first_error") or {}).get("f1_processbench"),
        "prm800k_first_error_f1_complete_with_reference": (ref.get("first_error_final") or {}).get("f1_processbench"),
        "gsm8k_proxy_first_error_f1_with_reference": ((rep.get("gsm8k_first_error") or {}).get("with_reference")
                                                      or {}).get("all", {}).get("f1_processbench"),
        "false_first_error_math_references": (ff.get("math") or {}).get("first_error_flagged"),
        "false_first_error_gsm8k_references": (ff.get("gsm8k") or {}).get("first_error_flagged"),
        "answer_equivalence_agreement": (rep.get("answer_equivalence") or {}).get("agreement"),
        "solutions_per_s_gsm8k_style": ((rep.get("throughput") or {}).get("gsm8k_style") or {}).get("per_s_cpu"),
        "solutions_per_s_math_style": ((rep.get("throughput") or {}).get("math_style") or {}).get("per_s_cpu"),
    }
    return {f"verifier_report_{k}": float(v) for k, v in vals.items() if isinstance(v, int | float)}


def build_report(data_root: Path, out_dir: Path, limit: int | None = None, seed: int = 0,
                 train_checks: bool = False, publish: bool = False) -> dict:
    """Run the evaluations, write ``verifier_report.{json,md}`` (and a copy named by the verifier version,
    ``verifier_report.v<N>.json``) into ``out_dir``, return the numbers. ``train_checks`` adds the
    aggregation validation on PRM800K train (slow). ``publish`` (a full run only: no ``limit``) also writes
    it to :func:`published_path`, the copy that ships with this version and that the verify stage logs."""
    from verifier.core import VERIFIER_VERSION

    data_root, out_dir = Path(data_root), Path(out_dir)
    t0 = time.perf_counter()
    verifier = MathVerifier()
    scorer = verifier.scorer
    emb = verifier._embedder
    info = {"verifier_version": VERIFIER_VERSION,
            "step_scorer": scorer.version if scorer else None,
            "step_threshold": verifier.step_threshold,
            "step_scorer_note": verifier.scorer_note,
            "embedding_model": verifier.config.embedding_model if emb and emb.error is None else None}
    prm = {}
    if (data_root / "prm800k" / "phase1_test.stepwise.jsonl").exists():
        prm = prm800k_eval(data_root, verifier, limit, seed)
        prm["reference"] = prm800k_eval(data_root, verifier, limit, seed, with_reference=True)
    inj = {}
    if (data_root / "gsm8k" / "train.jsonl").exists():
        inj = injection_eval(data_root, verifier, limit, seed)
    n_small = min(limit, 300) if limit is not None else 300
    proxy = {}
    if (data_root / "gsm8k" / "train.jsonl").exists():
        from verifier.gsm8k_proxy import proxy_eval

        proxy = proxy_eval(data_root, verifier, n_small, seed)
    ff = false_flag_eval(data_root, verifier, n_small, seed)
    ans = answer_equivalence_eval()
    thr = throughput_eval(data_root, verifier, n_small)
    agg = aggregation_eval(data_root, verifier, limit or 1000, seed) if train_checks else {}
    rep = {"seed": seed, "limit": limit, "threshold": THRESHOLD, "verifier": info, "prm800k": prm,
           "injection": inj, "gsm8k_first_error": proxy, "false_flags": ff, "answer_equivalence": ans, "throughput": thr,
           "aggregation_train": agg, "seconds": round(time.perf_counter() - t0, 2)}
    out_dir.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(rep, indent=2) + "\n"
    (out_dir / "verifier_report.json").write_text(blob, encoding="utf-8")
    (out_dir / f"verifier_report.v{VERIFIER_VERSION}.json").write_text(blob, encoding="utf-8")
    (out_dir / "verifier_report.md").write_text(to_markdown(rep), encoding="utf-8")
    if publish:
        if limit is not None:
            raise ValueError("publish a full report only (no --limit)")
        published_path(VERIFIER_VERSION).write_text(blob, encoding="utf-8")
    return rep


def main(data_root: str | Path, out: str | Path, limit: int | None = None, seed: int = 0,
         train_checks: bool = False, publish: bool = False) -> dict:
    rep = build_report(Path(data_root), Path(out), limit, seed, train_checks, publish)
    print(to_markdown(rep))
    return rep


def cli_main(data_root: str, out: str, limit: int | None = None, train_checks: bool = False,
             publish: bool = False) -> dict:
    """Entry point for ``hnsdpo verifier-report``."""
    return main(data_root, out, limit, train_checks=train_checks, publish=publish)


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data", sys.argv[2] if len(sys.argv) > 2 else "reports",
         int(sys.argv[3]) if len(sys.argv) > 3 else None)


__all__ = ["aggregation_eval", "answer_equivalence_eval", "answers_equal", "auroc", "auroc_interval", "build_report",
           "cli_main",
           "false_flag_eval", "first_error_metrics", "headline", "inject", "main", "published_path", "prf", "prm_steps", "synthetic_problems",
           "throughput_eval"]
