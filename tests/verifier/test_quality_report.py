"""The quality report on a small sample of the shared data, and its metric helpers."""

from __future__ import annotations

import json
import random

from verifier.report import auroc, auroc_interval, build_report, inject, prf, synthetic_problems
from verifier.steps import split_steps


def test_auroc_and_prf():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert auroc([0.9, 0.1], [0, 1]) == 0.0
    assert auroc([1.0], [1]) is None
    assert prf([True, True, False], [True, False, True])["precision"] == 0.5


def test_auroc_interval_resamples_whole_problems():
    assert auroc_interval([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1], ["a", "a", "b", "b"])["ci95"] == [1.0, 1.0]
    assert auroc_interval([0.1, 0.9], [0, 0], ["a", "b"]) is None  # one class
    assert auroc_interval([0.1, 0.9], [0, 1], ["a", "a"]) is None  # one problem
    # 20 problems of 50 steps: a problem's steps share its label and a problem-level score (plus a little
    # step noise), so there are 20 independent observations, not 1,000
    rng = random.Random(3)
    scores, labels, groups = [], [], []
    for g in range(20):
        y, base = g % 2, rng.random()
        for _ in range(50):
            scores.append(base + 0.01 * rng.random())
            labels.append(y)
            groups.append(g)
    by_problem = auroc_interval(scores, labels, groups, n_boot=400)
    by_step = auroc_interval(scores, labels, list(range(len(scores))), n_boot=400)
    point = auroc(scores, labels)
    assert by_problem["ci95"][0] <= point <= by_problem["ci95"][1]
    assert by_problem["ci95"][0] < 0.5 < by_problem["ci95"][1]  # 10 against 10 random problems: no signal
    assert by_problem["sd"] > 3 * by_step["sd"]
    assert by_problem["n_groups"] == 20 and by_problem["mde_80"] == round(2.8 * by_problem["sd"], 4)
    assert auroc_interval(scores, labels, groups, n_boot=400) == by_problem  # seeded


def test_injections_change_the_text():
    rng = random.Random(0)
    p = synthetic_problems(3, seed=1)[0]
    steps = split_steps(p["answer"])
    for kind in ("wrong_calc", "swapped", "dropped", "wrong_final", "truncated", "repetition", "irrelevant"):
        got = inject(kind, steps, rng)
        assert got is not None, kind
        assert got[0] != steps, kind


def test_build_report_small(shared_data, tmp_path):
    rep = build_report(shared_data, tmp_path, limit=40, seed=0)
    assert (tmp_path / "verifier_report.md").read_text().startswith("# MathVerifier quality report")
    assert json.loads((tmp_path / "verifier_report.json").read_text())["limit"] == 40
    assert rep["prm800k"]["n_steps"] == 40
    iv = rep["prm800k"]["auroc_interval"]
    assert iv["ci95"][0] <= rep["prm800k"]["auroc"] <= iv["ci95"][1] and iv["unit"] == "problem"
    assert rep["injection"]["wrong_calc"]["detection_rate"] >= 0.8
    assert rep["injection"]["clean_correct_rate"] >= 0.95
