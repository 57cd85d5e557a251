"""The quality report on a small sample of the shared data, and its metric helpers."""

from __future__ import annotations

import json
import random

from verifier.report import auroc, build_report, inject, prf, synthetic_problems
from verifier.steps import split_steps


def test_auroc_and_prf():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert auroc([0.9, 0.1], [0, 1]) == 0.0
    assert auroc([1.0], [1]) is None
    assert prf([True, True, False], [True, False, True])["precision"] == 0.5


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
    assert rep["injection"]["wrong_calc"]["detection_rate"] >= 0.8
    assert rep["injection"]["clean_correct_rate"] >= 0.95
