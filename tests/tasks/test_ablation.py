"""The ablation report generator on fixed inputs: exact numbers of its typed rows, classifications, the
computed reading, and one check that each table renders its rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conf import load_config
from conf.schema import AblationConfig
from tasks.ablation import run_ablation_report
from tasks.analysis.ablation import (
    AblationData,
    AblationError,
    ReportSettings,
    answer_kind,
    build_ablation_report,
    classify_sft,
    correlation,
    error_kind,
    known_arithmetic_slip,
    t_interval,
    weight_summary,
)
from tasks.analysis.ablation_render import render_markdown
from tasks.common.records import Pair, Problem, write_jsonl
from tasks.evaluation.stats import bootstrap_mean
from verifier.verdict import DIMENSIONS, Verdict

IDS = [f"p{i}" for i in range(6)]
STEPS = [2, 2, 3, 3, 4, 4]
SFT = [1, 0, 1, 0, 0, 1]
RANDOM = {0: [1, 0, 1, 0, 0, 0], 1: [1, 0, 0, 0, 0, 1]}
WEIGHTED = {0: [1, 1, 1, 0, 1, 1], 1: [1, 1, 1, 1, 0, 1]}
GOLD = ["10", "10", "20", "40", "5", "30"]
OUTPUTS = [
    "3+7 = <<3+7=10>>10\n#### 10",
    "3+4 = <<3+4=8>>8 and 8+3 = <<8+3=11>>11\n#### 11",  # a known slip (3+4 is 7), answer 1 off
    "4*5 = <<4*5=20>>20\n#### 20",
    "5*8 = <<5*8=40>>40 then 40+50 = <<40+50=90>>90\n#### 90",  # calculations right, plan wrong
    "Mia has 7-2 = <<7-2=5>>5",  # no final answer
    "6*5 = <<6*5=30>>30\n#### 30",
]
EXTRACTED = ["10", "11", "20", "90", None, "30"]
SYMBOLIC = [0.0, 0.5, 0.0, 0.0, 0.5, 0.0]  # the verifier flags p4 (a false positive)
VERIFIER_CORRECT = [True, False, True, False, False, False]  # disagrees with the grader on p5


def _problems() -> list[Problem]:
    return [Problem(id=i, question=f"q{i}", answer=g, source="synthetic", split="test", meta={"n_steps": s})
            for i, g, s in zip(IDS, GOLD, STEPS, strict=True)]


def _as_map(vec) -> dict[str, bool]:
    return {i: bool(c) for i, c in zip(IDS, vec, strict=True)}


def _verdict(pid: str, sym: float, correct: bool, index: int = 0) -> Verdict:
    dims = {d: 0.0 for d in DIMENSIONS}
    dims["symbolic_validity"] = sym
    dims["answer_correctness"] = 0.0 if correct else 1.0
    return Verdict(problem_id=pid, index=index, dims=dims, wrongness=0.3 * (not correct), absurdity=0.0,
                   correct=correct)


def _graded() -> list[dict]:
    return [{"id": i, "output": o, "gold": g, "extracted": e, "correct": bool(c)}
            for i, o, g, e, c in zip(IDS, OUTPUTS, GOLD, EXTRACTED, SFT, strict=True)]


def _sft_verdicts() -> dict[str, Verdict]:
    return {i: _verdict(i, s, v) for i, s, v in zip(IDS, SYMBOLIC, VERIFIER_CORRECT, strict=True)}


def _pair(pid: str, idx: int, strategy: str, weight: float, wrongness: float, absurdity: float,
          clipped: bool = False) -> Pair:
    return Pair(problem_id=pid, prompt="q", chosen="c", rejected="r", weight=weight, strategy=strategy,
                chosen_index=0, rejected_index=idx, confidence_chosen=0.5, confidence_rejected=0.6,
                similarity=0.7, wrongness=wrongness, absurdity=absurdity, perplexity=1.5, hardness=1.0,
                weight_raw=weight, clipped=clipped)


WEIGHTED_PAIRS = [
    _pair("p0", 1, "weighted", 0.8, 0.2, 0.8, clipped=True),
    _pair("p1", 1, "weighted", 0.9, 0.4, 0.6),
    _pair("p2", 1, "weighted", 1.1, 0.6, 0.4),
    _pair("p3", 1, "weighted", 1.2, 0.8, 0.2),
]
RANDOM_PAIRS = [_pair("p0", 2, "random", 1.0, 0.5, 0.5), _pair("p1", 2, "random", 1.0, 0.1, 0.9)]
REJECTED_DIMS = {(p.problem_id, 1): {**{d: 0.0 for d in DIMENSIONS}, "symbolic_validity": s}
                 for p, s in zip(WEIGHTED_PAIRS, [0.0, 0.5, 0.5, 1.0], strict=True)}


def _build(problems, sft, arms, **settings):
    return build_ablation_report(AblationData(problems, sft, arms), ReportSettings(**settings))


@pytest.fixture(scope="module")
def report():
    kinds = classify_sft(_graded(), _sft_verdicts())
    data = AblationData(
        _problems(), _as_map(SFT),
        {"random": {s: _as_map(v) for s, v in RANDOM.items()},
         "weighted-0.3": {s: _as_map(v) for s, v in WEIGHTED.items()}},
        arm_meta={"random": {"strategy": "random", "lam": None},
                  "weighted-0.3": {"strategy": "weighted", "lam": 0.3}},
        sft_kinds=kinds, pairs={"random": RANDOM_PAIRS, "weighted-0.3": WEIGHTED_PAIRS}, rejected_dims=REJECTED_DIMS)
    return build_ablation_report(data, ReportSettings(primary="weighted-0.3", random_arm="random", samples=500))


def _boot(values) -> tuple:
    est = bootstrap_mean(values, samples=500, seed=0)
    return pytest.approx(est.low), pytest.approx(est.high)


def _avg(by_seed) -> list[float]:
    return [(a + b) / 2 for a, b in zip(by_seed[0], by_seed[1], strict=True)]


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(("text", "slip"), [
    ("12+18 = <<12+18=30>>30 shells", False),
    ("12+18 = <<12+18=31>>31 shells", True),
    ("12+18 = <<12+18=30>>31 shells", True),  # the shown value differs from the annotation
    ("30/5 = <<30/5=6>>6", False),
    ("30/4 = 7", True),
    ("3 x 4 = 12 and 12 - 5 = 7", False),
    ("12 - 5 = 8", True),
    ("no calculation here, #### 12", False),
    ("", False),
])
def test_known_arithmetic_slip(text, slip):
    assert known_arithmetic_slip(text) is slip


@pytest.mark.parametrize(("extracted", "gold", "correct", "kind"), [
    ("40", "40", True, "correct"),
    ("41", "40", False, "near_miss"),  # within max(1, 4)
    ("44", "40", False, "near_miss"),
    ("45", "40", False, "far_off"),
    ("2", "1", False, "near_miss"),  # the absolute floor of 1
    ("3", "1", False, "far_off"),
    ("seven", "40", False, "far_off"),  # not a number
    (None, "40", False, "no_answer"),
    ("  ", "40", False, "no_answer"),
])
def test_answer_kind(extracted, gold, correct, kind):
    assert answer_kind(extracted, gold, correct) == kind


def test_error_kind():
    assert error_kind(True, {"symbolic_validity": 1.0}) == "correct"
    assert error_kind(False, {"symbolic_validity": 0.5}) == "arithmetic"
    assert error_kind(False, {"symbolic_validity": 0.0, "structural_integrity": 1.0}) == "structural"
    assert error_kind(False, None) == "structural"


def test_classify_sft():
    kinds = classify_sft(_graded(), _sft_verdicts())
    assert [kinds[i]["answer"] for i in IDS] == ["correct", "near_miss", "correct", "far_off", "no_answer",
                                                 "correct"]
    assert [kinds[i]["error"] for i in IDS] == ["correct", "arithmetic", "correct", "structural", "arithmetic",
                                                "correct"]
    assert [kinds[i]["known"] for i in IDS] == ["correct", "arithmetic", "correct", "structural", "structural",
                                                "correct"]


# ---------------------------------------------------------------- statistics helpers


def test_t_interval():
    mean, lo, hi = t_interval([0.4, 0.5, 0.6])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, df=2)
    assert mean == pytest.approx(0.5)
    assert (lo, hi) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert t_interval([0.7]) == (0.7, None, None)
    assert t_interval([]) == (None, None, None)


def test_correlation():
    assert correlation([1, 2, 3], [2, 4, 6]) == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0),
                                                 "n": 3}
    assert correlation([1, 1, 1], [1, 2, 3]) == {"pearson": None, "spearman": None, "n": 3}
    assert correlation([1, 2, float("nan"), 4], [4, 3, 0, 1])["n"] == 3


# ---------------------------------------------------------------- the report


def test_arm_rows(report):
    rows = {r.arm: r for r in report.arms}
    assert list(rows) == ["sft", "random", "weighted-0.3"]
    assert rows["sft"].accuracy == 0.5 and rows["sft"].seeds == [] and rows["sft"].seed_low is None
    assert (rows["sft"].problem_low, rows["sft"].problem_high) == _boot(SFT)
    assert rows["random"].per_seed == [pytest.approx(2 / 6), pytest.approx(2 / 6)]
    assert (rows["random"].seed_low, rows["random"].seed_high) == (pytest.approx(2 / 6), pytest.approx(2 / 6))
    assert (rows["random"].problem_low, rows["random"].problem_high) == _boot(_avg(RANDOM))
    assert rows["weighted-0.3"].accuracy == pytest.approx(5 / 6)
    assert rows["weighted-0.3"].seed_low == pytest.approx(5 / 6)  # identical seeds: zero-width interval
    assert (rows["weighted-0.3"].strategy, rows["weighted-0.3"].lam) == ("weighted", 0.3)
    assert (rows["weighted-0.3"].problem_low, rows["weighted-0.3"].problem_high) == _boot(_avg(WEIGHTED))


def test_page_states_the_commit_it_came_from(report):
    from tasks.common.provenance import git_commit

    assert report.commit == git_commit()
    assert f"From commit `{report.commit[:12]}`" in render_markdown(report)


def test_paired_differences(report):
    by = {(c.arm, c.vs): c for c in report.comparisons}
    assert list(by) == [("random", "sft"), ("weighted-0.3", "sft"), ("weighted-0.3", "random")]
    w, r = _avg(WEIGHTED), _avg(RANDOM)
    # pooled over two seeds: weighted is alone right 2+2 times vs SFT (p = 2/2^4), 3+3 times vs random
    expected = {("weighted-0.3", "sft"): (1 / 3, [x - y for x, y in zip(w, SFT, strict=True)], 2, 4, 0, 0.125,
                                          [0.5, 0.5], "better, not significant"),
                ("weighted-0.3", "random"): (0.5, [x - y for x, y in zip(w, r, strict=True)], 2, 6, 0, 0.03125,
                                             [0.25, 0.25], "holds"),
                ("random", "sft"): (-1 / 6, [x - y for x, y in zip(r, SFT, strict=True)], 0, 0, 2, 0.5, [1.0, 1.0],
                                    "worse, not significant")}
    for key, (diff, per_problem, wins, b, c, p, p_seeds, reading) in expected.items():
        got = by[key]
        assert got.diff == pytest.approx(diff) and (got.seed_low, got.seed_high) == (pytest.approx(diff),) * 2
        assert (got.diff_low, got.diff_high) == _boot(per_problem)
        assert (got.wins, got.b, got.c, got.reading) == (wins, b, c, reading)
        assert got.p_value == pytest.approx(p) and got.p_per_seed == pytest.approx(p_seeds)
        # (z_.975 + z_.8) * sd(per-problem differences) / sqrt(n)
        assert got.mde == pytest.approx(2.8015852 * float(np.std(per_problem, ddof=1)) / math.sqrt(len(IDS)))


def test_breakdowns(report):
    steps = {g.group: (g.n, g.accuracy) for g in report.by_steps}
    assert steps == {2: (2, {"sft": 0.5, "random": 0.5, "weighted-0.3": 1.0}),
                     3: (2, {"sft": 0.5, "random": 0.25, "weighted-0.3": 0.75}),
                     4: (2, {"sft": 0.5, "random": 0.25, "weighted-0.3": 0.75})}
    by_error = {(g.axis, g.kind): (g.n, g.accuracy["sft"], g.accuracy["random"], g.accuracy["weighted-0.3"])
                for g in report.by_sft_error if g.n}
    assert by_error == {("answer", "correct"): (3, 1.0, pytest.approx(2 / 3), 1.0),
                        ("answer", "near_miss"): (1, 0.0, 0.0, 1.0), ("answer", "far_off"): (1, 0.0, 0.0, 0.5),
                        ("answer", "no_answer"): (1, 0.0, 0.0, 0.5),
                        ("error", "correct"): (3, 1.0, pytest.approx(2 / 3), 1.0),
                        ("error", "arithmetic"): (2, 0.0, 0.0, 0.75), ("error", "structural"): (1, 0.0, 0.0, 0.5),
                        ("known", "correct"): (3, 1.0, pytest.approx(2 / 3), 1.0),
                        ("known", "arithmetic"): (1, 0.0, 0.0, 1.0), ("known", "structural"): (2, 0.0, 0.0, 0.5)}


def test_weight_summaries(report):
    by = {w.arm: w for w in report.weights}
    rnd, w = by["random"], by["weighted-0.3"]
    assert (rnd.n_pairs, rnd.mean, rnd.std, rnd.clipped_share, rnd.constant, rnd.degenerate) == (
        2, 1.0, 0.0, 0.0, True, None)
    assert (w.n_pairs, w.mean, w.min, w.median, w.max, w.clipped_share, w.constant, w.degenerate) == (
        4, pytest.approx(1.0), 0.8, pytest.approx(1.0), 1.2, 0.25, False, False)
    assert w.std == pytest.approx(0.158, abs=5e-4)
    assert (w.q10, w.q90) == (pytest.approx(0.83), pytest.approx(1.17))
    assert w.correlations["wrongness"].spearman == pytest.approx(1.0)
    assert w.correlations["absurdity"].spearman == pytest.approx(-1.0)
    # ranks of [0, .5, .5, 1] against [1, 2, 3, 4]: 4.5 / sqrt(4.5 * 5)
    assert w.correlations["symbolic_validity"].spearman == pytest.approx(4.5 / math.sqrt(22.5))
    assert w.correlations["step_ordering"].spearman is None  # constant dimension


def test_markdown_renders_every_row(report):
    """One rendered line per table kind (the numbers themselves are tested on the rows above)."""
    md = render_markdown(report)
    assert "| weighted-0.3 | weighted | 0.3 | 2 | 83.3 | [83.3, 83.3] | [" in md  # accuracy
    assert "| weighted-0.3 | random | +50.0 | [" in md and "| 2/2 | 6 / 0 | 0.031 | 0.250, 0.250 | holds |" in md
    assert "| steps | n | sft | random | weighted-0.3 |" in md and "| 3 | 2 | 50.0 | 25.0 | 75.0 |" in md
    assert "| SFT's error (known, synthetic) | structural | 2 | 0.0 | 0.0 | 50.0 |" in md
    assert "| random | 2 | 1.000 | 0.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 0.0% | — |" in md
    assert "| symbolic_validity | +0.95 (" in md
    assert "| weighted-0.3 |" in md.split("Spearman (Pearson)")[1].splitlines()[2]  # only the varying arm
    assert "| verifier: arithmetic | 1 | 1 |" in md
    assert "| random | 2 | 0.0% | 0.0% | 0.700 |" in md  # pair composition
    # retention (SFT right: p0 p2 p5) and recovery of the near miss p1 and the known slip p1
    assert "| weighted-0.3 | 100.0 | 100.0 | 100.0 | 50.0 |" in md


def test_verifier_check_and_reading(report):
    chk = report.verifier_check
    assert (chk.tp, chk.fp, chk.fn, chk.tn) == (1, 1, 0, 1)
    assert chk.agreement == pytest.approx(2 / 3) and chk.precision == 0.5 and chk.recall == 1.0
    assert chk.correct_agreement == pytest.approx(5 / 6)
    r = report.reading
    assert r.verdict == "same direction, not significant" and r.holds is False
    assert r.sentences[0] == ("The paper's ordering (weighted-0.3 > random and > SFT) at this scale (n = 6 "
                              "problems, α = 0.05): **same direction, not significant**.")
    assert "Ranking by mean accuracy: weighted-0.3 (83.3%) > sft (50.0%) > random (33.3%)." in r.sentences
    assert any(d.startswith("Does random DPO degrade? random DPO is below SFT, not significantly") for d in
               r.diagnostics)
    assert any("agrees with the known slips on 66.7% (precision 50.0%, recall 100.0%" in d for d in r.diagnostics)


def test_reading_holds_and_degenerate():
    n = 40
    problems = [Problem(id=f"q{i}", question="q", answer="1", source="s", split="test", meta={"n_steps": 2})
                for i in range(n)]
    sft = {p.id: i < 10 for i, p in enumerate(problems)}
    rnd = {p.id: i < 12 for i, p in enumerate(problems)}
    w = {p.id: i < 30 for i, p in enumerate(problems)}
    flat = [_pair("q0", i, "weighted", 1.0, 0.5, 0.5) for i in range(5)]
    rep = build_ablation_report(AblationData(problems, sft, {"random": {0: rnd}, "w": {0: w}}, pairs={"w": flat}),
                                ReportSettings(primary="w", samples=300))
    assert rep.reading.verdict == "holds" and rep.reading.holds is True
    assert any(d.startswith("Degenerate weights in w: std 0.000") for d in rep.reading.diagnostics)
    worse = _build(problems, w, {"random": {0: rnd}, "w": {0: sft}}, primary="w", samples=300)
    assert worse.reading.verdict == "does not hold"
    assert worse.comparison("w", "sft").reading == "worse"


def test_pair_composition():
    pairs = [*WEIGHTED_PAIRS[:2], WEIGHTED_PAIRS[2].model_copy(update={"chosen_index": None, "similarity": 0.1}),
             WEIGHTED_PAIRS[3].model_copy(update={"rejected_kind": "unsound"})]
    w = weight_summary("weighted", pairs, {})
    assert (w.reference_chosen_share, w.unsound_negative_share) == (0.25, 0.25)
    assert w.mean_similarity == pytest.approx((0.7 * 3 + 0.1) / 4)


SYNTHETIC_META = {"values": [12, 30], "traps": [{"type": "distractor", "value": 7, "wrong": ["37"]},
                                                {"type": "difference", "value": None, "wrong": ["-30"]}]}


@pytest.mark.parametrize(("output", "extracted", "correct", "kind", "coarse"), [
    ("12+18 = 30\n#### 30", "30", True, "correct", "correct"),
    ("12+18 = 30 and 30+7 = 37\n#### 37", "37", False, "distractor", "structural"),   # the trap's answer
    ("12+18 = 31\n#### 31", "31", False, "arithmetic", "arithmetic"),
    ("12-42 = -30\n#### -30", "-30", False, "difference", "structural"),
    ("12*2 = 24\n#### 24", "24", False, "other_structural", "structural"),          # right step, wrong plan
    ("I do not know", None, False, "no_answer", "structural"),
])
def test_classify_sft_reads_the_generators_error_types(output, extracted, correct, kind, coarse):
    problem = Problem(id="s0", question="q", answer="30", source="synthetic", split="test", meta=SYNTHETIC_META)
    row = {"id": "s0", "output": output, "gold": "30", "extracted": extracted, "correct": correct}
    got = classify_sft([row], {}, {"s0": problem})["s0"]
    assert (got["known_type"], got["known"]) == (kind, coarse)
    # without the generator's record (real data) only the arithmetic / structural split is known
    assert classify_sft([row], {})["s0"]["known_type"] is None


def test_error_types_put_the_verifiers_split_beside_the_known_one():
    from tasks.analysis.ablation import error_types

    kinds = {"a": {"known_type": "arithmetic", "error": "arithmetic"},
             "b": {"known_type": "arithmetic", "error": "structural"},
             "c": {"known_type": "distractor", "error": "structural"},
             "d": {"known_type": "no_answer", "error": "structural"},
             "e": {"known_type": "correct", "error": "correct"}}
    t = error_types(kinds)
    rows = {r.kind: (r.n, r.share, r.verifier_arithmetic, r.verifier_structural) for r in t.rows if r.n}
    assert rows == {"arithmetic": (2, 0.5, 1, 1), "distractor": (1, 0.25, 0, 1), "no_answer": (1, 0.25, 0, 1)}
    assert (t.n_wrong, t.structural_share, t.verifier_structural_share) == (4, 0.25, 0.75)
    assert error_types({"x": {"known_type": None, "error": "structural"}}) is None


def test_weighted_arm_is_compared_with_uniform_on_the_same_pairs():
    """The weights alone: a weighted arm against the w = 1 arm, with the share of pairs the two share."""
    uniform_pairs = [p.model_copy(update={"weight": 1.0, "strategy": "uniform"}) for p in WEIGHTED_PAIRS]
    arms = {"uniform": {0: _as_map(RANDOM[0])}, "weighted-0.3": {0: _as_map(WEIGHTED[0])}}
    data = AblationData(_problems(), _as_map(SFT), arms, arm_meta={"weighted-0.3": {"strategy": "weighted"}},
                        pairs={"uniform": uniform_pairs[:3], "weighted-0.3": WEIGHTED_PAIRS})
    report = build_ablation_report(data, ReportSettings(primary="weighted-0.3", samples=200))
    c = report.comparison("weighted-0.3", "uniform")
    assert (c.diff, c.b, c.c, c.same_pairs) == (pytest.approx(0.5), 3, 0, 0.75)
    assert report.comparison("uniform", "weighted-0.3") is None
    assert any(x.startswith("The weights alone, weighted-0.3 − uniform (75.0% of the pairs the same)")
               for x in report.reading.sentences)
    assert "| weighted-0.3 | uniform (same pairs: 75.0%) | +50.0 |" in render_markdown(report)


def test_weight_summary_empty_and_uniform():
    assert weight_summary("uniform", [], {}).n_pairs == 0
    u = weight_summary("uniform", [_pair("p0", 1, "uniform", 1.0, 0.3, 0.1)], {})
    assert u.constant is True and u.degenerate is None


def test_errors_name_the_culprit():
    problems = _problems()
    with pytest.raises(AblationError, match=r"arm 'w' seed 1: no result for 1 test problem\(s\), e.g. \['p5'\]"):
        _build(problems, _as_map(SFT), {"w": {1: {i: True for i in IDS[:5]}}}, primary="w")
    with pytest.raises(AblationError, match="primary arm 'x' not among"):
        _build(problems, _as_map(SFT), {"w": {0: _as_map(SFT)}}, primary="x")
    with pytest.raises(AblationError, match="sft: no result"):
        _build(problems, {}, {"w": {0: _as_map(SFT)}}, primary="w")


def test_settings_default_to_the_schema():
    s, ab = ReportSettings(), AblationConfig()
    assert (s.primary, s.random_arm, s.alpha) == (ab.primary, ab.random_arm, ab.alpha)


def test_ablation_config_validation():
    cfg = AblationConfig()
    assert [a.name for a in cfg.arms] == ["random", "uniform", "weighted-0.3", "weighted-0.6", "weighted-1.0"]
    with pytest.raises(ValueError, match="lam only applies"):
        AblationConfig(arms=[{"name": "r", "strategy": "random", "lam": 0.3}], primary="r")
    with pytest.raises(ValueError, match="primary"):
        AblationConfig(arms=[{"name": "r", "strategy": "random"}])
    with pytest.raises(ValueError, match="no repeats"):
        AblationConfig(seeds=[0, 0])


# ---------------------------------------------------------------- the shell


class FakeVerifier:
    """Returns the fixed SFT verdicts in item order (no worker processes)."""

    def score_batch(self, items, workers=None, progress=True):
        verdicts = _sft_verdicts()
        return [verdicts[it["problem_id"]] for it in items]


def test_run_ablation_report(tmp_path):
    from tasks.evaluation.grading import Graded

    cfg = load_config("conf/tiny.yaml", ["evaluate.bootstrap_samples=200"])
    name = cfg.data.eval[0].name
    data = tmp_path / "data"
    write_jsonl(data / "eval" / f"{name}.jsonl", _problems())

    def evaluate_dir(label: str, vec) -> str:
        folder = tmp_path / label
        rows = [Graded(id=i, prompt="p", output=o, gold=g, extracted=e, answer_matches=bool(c), correct=bool(c),
                       reason_if_wrong=None if c else "wrong", finish_reason="stop", n_tokens=5)
                for i, o, g, e, c in zip(IDS, OUTPUTS, GOLD, EXTRACTED, vec, strict=True)]
        write_jsonl(folder / f"{name}.jsonl", rows)
        (folder / "metrics.json").write_text(json.dumps({"datasets": {name: {}}}))
        return str(folder)

    pairs_dir = {"random": tmp_path / "pairs-random", "weighted-0.3": tmp_path / "pairs-weighted"}
    write_jsonl(pairs_dir["random"] / "pairs.jsonl", RANDOM_PAIRS)
    write_jsonl(pairs_dir["weighted-0.3"] / "pairs.jsonl", WEIGHTED_PAIRS)
    verify = tmp_path / "verify"
    write_jsonl(verify / "verdicts.jsonl", [_verdict(pid, dims["symbolic_validity"], False, idx)
                                            for (pid, idx), dims in REJECTED_DIMS.items()])
    out = tmp_path / "out"
    metrics = run_ablation_report(
        cfg, evaluate_dir("sft", SFT),
        {"random": {s: evaluate_dir(f"random-{s}", v) for s, v in RANDOM.items()},
         "weighted-0.3": {s: evaluate_dir(f"weighted-{s}", v) for s, v in WEIGHTED.items()}},
        pairs_dir, verify, data, out, command="hnsdpo ablation -c conf/ablation-tiny.yaml",
        arm_meta={"weighted-0.3": {"strategy": "weighted", "lam": 0.3}}, verifier=FakeVerifier())
    assert sorted(p.name for p in out.iterdir()) == ["ablation.json", "ablation.md", "ablation.png",
                                                     "sft_verdicts.jsonl"]
    md = (out / "ablation.md").read_text()
    assert md.startswith(f"# Ablation: tiny on {name}\n\nRegenerate with:\n\n```bash\n"
                         "hnsdpo ablation -c conf/ablation-tiny.yaml\n```")
    assert "| 3 | 2 | 50.0 | 25.0 | 75.0 |" in md
    assert "| symbolic_validity | +0.95 (" in md  # dims joined from verdicts.jsonl
    assert metrics["weighted-0.3-random/diff"] == pytest.approx(0.5)
    assert metrics["holds"] == 0.0
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["dataset"] == name and saved["verifier_check"]["tp"] == 1
    n = len(REJECTED_DIMS)
    assert saved["pool"]["samples"] == n and saved["pool"]["mixed"] == 0  # every pool verdict here is wrong
    assert f"({n}); 0.0% of the samples correct" in md and f"mixed, 0 all correct, {saved['pool']['all_wrong']} all wrong" in md


def test_pool_summary_counts_mixed_problems_and_sound_samples():
    from tasks.analysis.ablation_inputs import pool_summary

    unsound = _verdict("a", 0.0, True, 2).model_copy(update={"first_error_step": 1})
    verdicts = [_verdict("a", 0.0, True, 0), _verdict("a", 1.0, False, 1), unsound,  # mixed
                _verdict("b", 0.0, True, 0), _verdict("b", 0.0, True, 1),  # all correct
                _verdict("c", 1.0, False, 0)]  # all wrong, k = 1
    p = pool_summary(verdicts)
    assert (p.problems, p.samples, p.k_min, p.k_max) == (3, 6, 1, 3)
    assert (p.mixed, p.all_correct, p.all_wrong) == (1, 1, 1) and p.mixed_share == pytest.approx(1 / 3)
    assert p.correct_share == pytest.approx(4 / 6) and p.sound_correct_share == pytest.approx(3 / 6)
    assert pool_summary([]) is None


def test_run_ablation_report_missing_eval(tmp_path):
    cfg = load_config("conf/tiny.yaml", [])
    name = cfg.data.eval[0].name
    write_jsonl(tmp_path / "data" / "eval" / f"{name}.jsonl", _problems())
    with pytest.raises(AblationError, match=f"evaluation records not found: .*sft/{name}.jsonl"):
        run_ablation_report(cfg, tmp_path / "sft", {}, {}, tmp_path, tmp_path / "data", tmp_path / "out")


def test_arm_displacement_averages_the_seeds_dpo_metrics(tmp_path):
    from tasks.analysis.ablation_inputs import arm_displacement
    from tasks.evaluation.report import DISPLACEMENT_KEYS

    root = tmp_path / "artifacts"
    evals: dict[str, dict[int, Path]] = {"weighted-0.3": {}, "old": {}}
    for seed, delta in ((0, -2.0), (1, -4.0)):
        (root / "dpo" / f"k{seed}").mkdir(parents=True)
        (root / "dpo" / f"k{seed}" / "manifest.json").write_text(json.dumps(
            {"stage": "dpo", "key": f"k{seed}",
             "metrics": {**dict.fromkeys(DISPLACEMENT_KEYS, 1.0), "logps_chosen_delta": delta}}))
        folder = root / "evaluate" / f"e{seed}"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"stage": "evaluate", "key": f"e{seed}",
                                                          "inputs": {"model": f"k{seed}"}}))
        evals["weighted-0.3"][seed] = folder
    old = root / "evaluate" / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"stage": "evaluate", "key": "old",
                                                   "inputs": {"model": "missing"}}))
    evals["old"][0] = old  # a DPO run from before the diagnostic: no row
    rows = arm_displacement(evals)
    assert [(r.arm, r.seeds, r.logps_chosen_delta) for r in rows] == [("weighted-0.3", 2, -3.0)]


def test_stability_summary_separates_training_noise_from_the_data_seed(load_script):
    """scripts/testbed_stability.py --model-seeds: the spread over data seeds per model seed, the range within a
    data seed (the training's noise) and the range of the data seeds' means."""
    t = load_script("testbed_stability")
    assert t.cell_name(1234, None) == "1234" and t.cell_name(1234, 1) == "1234-m1"
    one = t.spread_summary({(1234, None): 65.3, (2, None): 72.1, (1, None): 73.3})
    assert one == ["SFT greedy: spread 8.0 points over 3 data seeds (min 65.3%, max 73.3%)"]
    two = t.spread_summary({(1234, 0): 65.3, (1234, 1): 62.7, (2, 0): 72.1, (2, 1): 70.0, (1, 0): 73.3})
    assert two[0].startswith("SFT greedy (model seed 0): spread 8.0 points over 3 data seeds")
    assert two[1].startswith("SFT greedy (model seed 1): spread 7.3 points over 2 data seeds")
    assert two[2] == "within a data seed (model seeds 0, 1): range 1234: 2.6, 2: 2.1 points"
    assert two[3] == "data seeds' means: 1234: 64.0%, 2: 71.0% (range 7.0 points)"  # seed 1 has one model only
    assert t.spread_summary({}) == ["no SFT model finished"]
    assert t.spread_summary({(1, None): 60.0, (2, None): 61.0}, "pretrain")[0].endswith("over 2 pretrain seeds "
                                                                                       "(min 60.0%, max 61.0%)")


def test_stability_finds_each_seeds_models_by_their_keys(load_script, tmp_path):
    """scripts/testbed_stability.py reads the base and SFT model a seed's config keys to, so seeds in one root
    (--one-root) find their own SFT model and the base they share, whichever finished last."""
    from conf import load_config
    from tasks.orchestration import plan
    from training.modelref import write_model_ref

    t = load_script("testbed_stability")
    config = "conf/ablation-tiny.yaml"
    extra = {seed: ["data.synthetic.pretrain_seed=1234", f"data.synthetic.seed={seed}"] for seed in (1234, 2)}
    for ov in extra.values():
        cfg = load_config(config, ov)
        for stage, key in plan.plan_keys(cfg, plan.pipeline(cfg, "sft")).items():
            if stage != "data":
                (tmp_path / stage / key / "model").mkdir(parents=True, exist_ok=True)
                write_model_ref(tmp_path / stage / key, base=str(tmp_path / stage / key / "model"))
    bases = {seed: t.model_dir(tmp_path, "base", config, ov) for seed, ov in extra.items()}
    sfts = {seed: t.model_dir(tmp_path, "sft", config, ov) for seed, ov in extra.items()}
    assert bases[1234] == bases[2] and sfts[1234] != sfts[2]
    with pytest.raises(FileNotFoundError, match="no finished sft stage"):
        t.model_dir(tmp_path, "sft", config, ["data.synthetic.seed=5"])
