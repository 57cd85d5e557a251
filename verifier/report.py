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
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_pos = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_pos - pos * (pos + 1) / 2) / (pos * neg)


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
def prm800k_eval(data_root: Path, verifier: MathVerifier, limit: int | None, seed: int) -> dict:
    path = data_root / "prm800k" / "phase1_test.stepwise.jsonl"
    rows = [r for r in _read_jsonl(path) if r.get("rating") in (-1, 0, 1)]
    golds = {}
    m500 = data_root / "math" / "math500.jsonl"
    if m500.exists():
        golds = {r["problem"]: r["answer"] for r in _read_jsonl(m500)}
    rating: dict[tuple, int] = {}
    for r in rows:
        rating[(r["instruction"], tuple(r["responses"]), r["next_response"])] = r["rating"]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    scores, labels, traj_pred, traj_gold, with_calc = [], [], [], [], []
    for r in rows:
        steps = [*r["responses"], r["next_response"]]
        gold = golds.get(r["instruction"], "")
        has_answer = bool(answer_candidates(r["next_response"]))
        a = verifier.analyze(r["instruction"], steps, gold if has_answer else "")
        step_scores = a.step_scores()
        last = len(step_scores) - 1
        if len(a.steps) != len(steps):  # an empty step was dropped: align on the candidate
            step_scores = step_scores + [0.0] * (len(steps) - len(step_scores))
        s = step_scores[last] if last >= 0 else 0.0
        if has_answer and gold and not a.correct:
            s = max(s, 1.0)
        scores.append(s)
        labels.append(int(r["rating"] == -1))
        with_calc.append(bool(a.calcs and a.calcs[-1]))
        prefix_bad = any(rating.get((r["instruction"], tuple(r["responses"][:k]), step)) == -1
                         for k, step in enumerate(r["responses"]))
        traj_gold.append(prefix_bad or r["rating"] == -1)
        traj_pred.append(max(step_scores, default=0.0) >= 0.5 or (has_answer and bool(gold) and not a.correct))
    calc_idx = [i for i, c in enumerate(with_calc) if c]
    out = {
        "n_steps": len(rows), "n_bad": sum(labels),
        "auroc": _r(auroc(scores, labels)),
        "auroc_steps_with_calculation": _r(auroc([scores[i] for i in calc_idx], [labels[i] for i in calc_idx])),
        "n_steps_with_calculation": len(calc_idx),
        "flag_rate_bad": _r(_mean([s >= 0.5 for s, y in zip(scores, labels, strict=True) if y])),
        "flag_rate_ok": _r(_mean([s >= 0.5 for s, y in zip(scores, labels, strict=True) if not y])),
        "trajectory": prf(traj_pred, traj_gold),
    }
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


def inject(kind: str, steps: list[str], rng: random.Random) -> tuple[list[str], int | None] | None:
    """An injected copy of ``steps`` and the expected first erroneous step (None: not defined)."""
    body = [s for s in steps if not s.startswith("####")]
    final = [s for s in steps if s.startswith("####")]
    anns = _ann_steps(body)
    if kind == "wrong_calc":
        if not anns:
            return None
        i, lhs, res = rng.choice(anns)
        try:
            val = float(res.replace(",", ""))
        except ValueError:
            return None
        new = val + max(1, round(abs(val) * 0.2))
        new_s = str(int(new)) if new == int(new) else f"{new:g}"
        m = _ANN_RE.search(body[i])
        body = list(body)
        body[i] = body[i][:m.start()] + f"<<{lhs}={new_s}>>{m.group(3)}{new_s}" + body[i][m.end():]
        return body + final, i
    if kind == "swapped":
        pairs = [(i, j) for (i, _, r) in anns for (j, _, _) in anns if j == i + 1 and _uses(body[j], r)]
        if not pairs:
            return None
        i, j = rng.choice(pairs)
        body = list(body)
        body[i], body[j] = body[j], body[i]
        return body + final, i
    if kind == "dropped":
        cands = [(i, j) for (i, _, r) in anns for (j, _, _) in anns if j > i and _uses(body[j], r)]
        if not cands:
            return None
        i, j = rng.choice(cands)
        return body[:i] + body[i + 1:] + final, j - 1
    if kind == "wrong_final":
        if not final:
            return None
        m = re.match(r"####\s*(-?[\d,.]+)", final[-1])
        if not m:
            return None
        try:
            val = float(m.group(1).replace(",", ""))
        except ValueError:
            return None
        new = val + max(1, round(abs(val) * 0.3))
        new_s = str(int(new)) if new == int(new) else f"{new:g}"
        return body + [f"#### {new_s}"], len(body)
    if kind == "truncated":
        text = "\n".join(steps)
        cut = int(len(text) * rng.uniform(0.4, 0.7))
        while cut < len(text) and text[cut - 1].isdigit():
            cut += 1  # do not end on a complete number by accident
        cut = max(1, cut - 3)
        return split_steps(text[:cut]), None
    if kind == "repetition":
        if not body:
            return None
        i = rng.randrange(len(body))
        return body[:i + 1] + [body[i]] * 3 + body[i + 1:] + final, None
    if kind == "irrelevant":
        i = rng.randrange(len(body) + 1)
        return body[:i] + [rng.choice(IRRELEVANT)] + body[i:] + final, None
    raise ValueError(kind)


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
    p, inj = rep["prm800k"], rep["injection"]
    lines = ["# MathVerifier quality report", "",
             f"seed {rep['seed']}, limit {rep['limit']}, {rep['seconds']:.1f} s", "",
             "## PRM800K phase-1 test (human step labels)", ""]
    if p:
        t = p["trajectory"]
        lines += [
            "| metric | value |", "| --- | --- |",
            f"| rated steps (bad = -1) | {p['n_steps']} ({p['n_bad']}) |",
            f"| step AUROC (error score vs -1) | {p['auroc']} |",
            f"| step AUROC, steps with a calculation ({p['n_steps_with_calculation']}) | "
            f"{p['auroc_steps_with_calculation']} |",
            f"| flag rate (score >= 0.5) on bad / other steps | {p['flag_rate_bad']} / {p['flag_rate_ok']} |",
            f"| trajectory 'incorrect' precision / recall / F1 | {t['precision']} / {t['recall']} / {t['f1']} "
            f"(n={t['n']}, positives {t['n_positive']}) |", ""]
    else:
        lines += ["(not run: data missing)", ""]
    lines += ["## Error injection (GSM8K train references + synthetic problems)", ""]
    if inj:
        lines += [f"{inj['n_problems']} problems ({inj['n_gsm8k']} GSM8K, {inj['n_synthetic']} synthetic); "
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
        lines += [f"| {d} | {v} | {with_ref.get(d)} |" for d, v in inj["clean_flag_rate"].items()]
    return "\n".join(lines) + "\n"


def build_report(data_root: Path, out_dir: Path, limit: int | None = None, seed: int = 0) -> dict:
    """Run both evaluations, write ``verifier_report.{json,md}`` into ``out_dir``, return the numbers."""
    data_root, out_dir = Path(data_root), Path(out_dir)
    t0 = time.perf_counter()
    verifier = MathVerifier()
    prm = {}
    if (data_root / "prm800k" / "phase1_test.stepwise.jsonl").exists():
        prm = prm800k_eval(data_root, verifier, limit, seed)
    inj = {}
    if (data_root / "gsm8k" / "train.jsonl").exists():
        inj = injection_eval(data_root, verifier, limit, seed)
    rep = {"seed": seed, "limit": limit, "threshold": THRESHOLD, "prm800k": prm, "injection": inj,
           "seconds": round(time.perf_counter() - t0, 2)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "verifier_report.json").write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    (out_dir / "verifier_report.md").write_text(to_markdown(rep), encoding="utf-8")
    return rep


def main(data_root: str | Path, out: str | Path, limit: int | None = None, seed: int = 0) -> dict:
    rep = build_report(Path(data_root), Path(out), limit, seed)
    print(to_markdown(rep))
    return rep


def cli_main(data_root: str, out: str, limit: int | None = None) -> dict:
    """Entry point for ``hnsdpo verifier-report``."""
    return main(data_root, out, limit)


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data", sys.argv[2] if len(sys.argv) > 2 else "reports",
         int(sys.argv[3]) if len(sys.argv) > 3 else None)


__all__ = ["answers_equal", "auroc", "build_report", "cli_main", "inject", "main", "prf", "synthetic_problems"]
