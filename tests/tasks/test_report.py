"""The comparison report on fixed per-problem results: exact table rows, paired statistics, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conf import load_config
from tasks.common.records import write_jsonl
from tasks.evaluation.report import ReportError, build_report, load_eval_dir, render_markdown
from tasks.evaluation.stats import accuracy, paired_difference
from tasks.report import run_report

ROOT = Path(__file__).resolve().parents[2]


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# sft: 4/10 on gsm, 4/4 on math. dpo-weighted: 6/10 on gsm — right where sft is right except g3,
# plus g4..g6 (b = 3, c = 1; exact McNemar p = 2·(1 + 4)/2^4 = 0.625) — and 4/4 on math.
# base: gsm only, all wrong, on g0..g4 plus one problem sft never saw (gx).
SFT = {"gsm": [(i, i in {"g0", "g1", "g2", "g3"}) for i in _ids("g", 10)],
       "math": [(i, True) for i in _ids("m", 4)]}
DPO = {"gsm": [(i, i in {"g0", "g1", "g2", "g4", "g5", "g6"}) for i in _ids("g", 10)],
       "math": [(i, True) for i in _ids("m", 4)]}
BASE = {"gsm": [(i, False) for i in [*_ids("g", 5), "gx"]]}
RESULTS = {"base": BASE, "sft": SFT, "dpo-weighted": DPO}


def _row(report: dict, model: str, dataset: str) -> dict:
    return next(r for r in report["rows"] if r["model"] == model and r["dataset"] == dataset)


def test_build_report_paired_statistics():
    rep = build_report(RESULTS, reference="sft", samples=1000, seed=0)
    assert rep["models"] == ["base", "sft", "dpo-weighted"]
    assert rep["datasets"] == ["gsm", "math"]
    assert [(r["model"], r["dataset"]) for r in rep["rows"]] == [
        ("base", "gsm"), ("sft", "gsm"), ("dpo-weighted", "gsm"), ("sft", "math"), ("dpo-weighted", "math")]
    dpo = _row(rep, "dpo-weighted", "gsm")
    assert (dpo["n"], dpo["correct"], dpo["accuracy"]) == (10, 6, 0.6)
    assert (dpo["b"], dpo["c"], dpo["n_paired"]) == (3, 1, 10)
    assert dpo["diff"] == pytest.approx(0.2)
    assert dpo["p_value"] == pytest.approx(0.625)
    expected = paired_difference([c for _, c in DPO["gsm"]], [c for _, c in SFT["gsm"]], samples=1000, seed=0)
    assert (dpo["diff_low"], dpo["diff_high"]) == (expected.low, expected.high)
    base = _row(rep, "base", "gsm")
    assert (base["n"], base["n_paired"], base["b"], base["c"]) == (6, 5, 0, 4)
    assert base["p_value"] == pytest.approx(2 / 16)
    assert base["diff"] == pytest.approx(-0.8)
    sft = _row(rep, "sft", "gsm")
    assert sft["vs"] is None and sft["diff"] is None and sft["p_value"] is None
    est = accuracy([c for _, c in SFT["gsm"]], samples=1000, seed=0)
    assert (sft["ci_low"], sft["ci_high"]) == (est.low, est.high)


def test_render_markdown_exact_rows():
    rep = build_report(RESULTS, reference="sft", samples=1000, seed=0)
    md = render_markdown(rep)
    lines = md.splitlines()
    assert "| model | dataset | accuracy | 95% CI | n | Δ vs sft | Δ 95% CI | McNemar p |" in lines
    assert "| sft | math | 100.0 | [100.0, 100.0] | 4 | — | — | — |" in lines
    assert "| dpo-weighted | math | 100.0 | [100.0, 100.0] | 4 | +0.0 | [+0.0, +0.0] | 1.000 |" in lines
    # a row with a non-degenerate interval: build the expected string from the statistics
    d = paired_difference([False] * 5, [True] * 4 + [False], samples=1000, seed=0)
    assert (f"| base | gsm | 0.0 | [0.0, 0.0] | 6 | -80.0 (n=5) | [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
            " | 0.125 |") in lines
    acc = accuracy([c for _, c in DPO["gsm"]], samples=1000, seed=0)
    d = paired_difference([c for _, c in DPO["gsm"]], [c for _, c in SFT["gsm"]], samples=1000, seed=0)
    assert (f"| dpo-weighted | gsm | 60.0 | [{100 * acc.low:.1f}, {100 * acc.high:.1f}] | 10 | +20.0 | "
            f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] | 0.625 |") in lines
    # compact Table-1 view
    assert "| model | gsm | math |" in lines
    assert "| base | 0.0 | — |" in lines
    assert "| dpo-weighted | 60.0 | 100.0 |" in lines
    # render_markdown is a pure function of report.json
    assert render_markdown(json.loads(json.dumps(rep))) == md


def test_report_without_reference_has_no_differences():
    rep = build_report({"a": SFT, "b": DPO}, reference="sft", samples=200)
    assert rep["reference"] is None
    assert all(r["diff"] is None for r in rep["rows"])
    assert "| b | gsm | 60.0 |" in render_markdown(rep)


def test_small_p_values_and_chi2_option():
    a = {"d": [(str(i), True) for i in range(30)]}
    b = {"d": [(str(i), False) for i in range(30)]}
    rep = build_report({"sft": b, "dpo": a}, samples=200, test="chi2")
    row = _row(rep, "dpo", "d")
    assert row["p_value"] < 0.001
    assert row["b"] == 30
    md = render_markdown(rep)
    assert "<0.001 |" in md and "χ²" in md


def _write_eval(folder: Path, results: dict[str, list[tuple[str, bool]]]) -> Path:
    folder.mkdir(parents=True)
    for name, rows in results.items():
        write_jsonl(folder / f"{name}.jsonl", [{"id": i, "correct": c, "output": "x"} for i, c in rows])
    (folder / "metrics.json").write_text(json.dumps({"datasets": {n: {} for n in results}}))
    return folder


def test_run_report_writes_files(tmp_path):
    cfg = load_config(ROOT / "conf/tiny.yaml", ["evaluate.bootstrap_samples=300"])
    evals = {label: _write_eval(tmp_path / label, res) for label, res in RESULTS.items()}
    out = tmp_path / "report"
    metrics = run_report(cfg, evals, out)
    rep = json.loads((out / "report.json").read_text())
    assert rep["bootstrap_samples"] == 300
    assert (out / "report.md").read_text() == render_markdown(rep)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics["dpo-weighted/gsm/accuracy"] == 0.6
    assert metrics["dpo-weighted/gsm/p_value"] == pytest.approx(0.625)
    assert "sft/gsm/diff" not in metrics
    assert load_eval_dir(evals["base"]) == BASE


def test_load_eval_dir_errors(tmp_path):
    with pytest.raises(ReportError, match="no metrics.json"):
        load_eval_dir(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"datasets": {"gsm": {}}}))
    with pytest.raises(ReportError, match="gsm.jsonl: listed in metrics.json but missing"):
        load_eval_dir(tmp_path)
    write_jsonl(tmp_path / "gsm.jsonl", [{"id": "a", "correct": True}, {"id": "b"}])
    with pytest.raises(ReportError, match="line 2"):
        load_eval_dir(tmp_path)
    with pytest.raises(ReportError, match="no evaluate folders"):
        run_report(load_config(ROOT / "conf/tiny.yaml"), {}, tmp_path / "out")


def test_report_shows_the_dpo_stages_displacement(tmp_path):
    """The report finds each DPO model's displacement metrics through the evaluate manifest's model key."""
    cfg = load_config(ROOT / "conf/tiny.yaml", ["evaluate.bootstrap_samples=100"])
    root = tmp_path / "artifacts"
    disp = {"displacement_pairs": 4, "logps_chosen_before": -20.0, "logps_chosen_after": -23.5,
            "logps_chosen_delta": -3.5, "logps_rejected_before": -25.0, "logps_rejected_after": -31.0,
            "logps_rejected_delta": -6.0, "logp_token_chosen_before": -0.5, "logp_token_chosen_after": -0.59,
            "logp_token_rejected_before": -0.6, "logp_token_rejected_after": -0.74, "share_chosen_logp_fell": 0.75}
    (root / "dpo" / "k1").mkdir(parents=True)
    (root / "dpo" / "k1" / "manifest.json").write_text(json.dumps({"stage": "dpo", "key": "k1",
                                                                  "metrics": {"steps": 3, **disp}}))
    (root / "sft" / "k0").mkdir(parents=True)
    (root / "sft" / "k0" / "manifest.json").write_text(json.dumps({"stage": "sft", "key": "k0",
                                                                  "metrics": {"steps": 3}}))
    evals = {}
    for label, res, model in (("sft", SFT, "k0"), ("dpo-weighted", DPO, "k1")):
        folder = _write_eval(root / "evaluate" / label, res)
        (folder / "manifest.json").write_text(json.dumps({"stage": "evaluate", "key": label,
                                                          "inputs": {"model": model, "data": "d"}}))
        evals[label] = folder
    metrics = run_report(cfg, evals, tmp_path / "report")
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rep["displacement"] == [{"model": "dpo-weighted", **disp}]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| dpo-weighted | 4 | -20.00 (-0.500) | -23.50 (-0.590) | -3.50 | -25.00 (-0.600) | -31.00 (-0.740) " \
           "| -6.00 | 75% |" in md
    assert metrics["dpo-weighted/displacement/logps_chosen_delta"] == -3.5
