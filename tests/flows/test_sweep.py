"""The DPO sweep: grid parsing, rows and table (tasks.analysis.sweep), and the flow on the fake stages — every point
reuses the cached upstream, evaluates the validation split only, and the best point is the best one."""

from __future__ import annotations

import json

import pytest

from tasks.analysis import sweep
from tasks.analysis.sweep import SweepError, parse_grid, points

PROFILE = "conf/tiny.yaml"


def test_parse_grid_and_points():
    grid = parse_grid(["dpo.learning_rate=1e-4, 2e-4", "pairs.lam=0.3,1.0"])
    assert grid == {"dpo.learning_rate": ["1e-4", "2e-4"], "pairs.lam": ["0.3", "1.0"]}
    assert points(grid) == [{"dpo.learning_rate": "1e-4", "pairs.lam": "0.3"},
                            {"dpo.learning_rate": "1e-4", "pairs.lam": "1.0"},
                            {"dpo.learning_rate": "2e-4", "pairs.lam": "0.3"},
                            {"dpo.learning_rate": "2e-4", "pairs.lam": "1.0"}]
    for bad, match in ((["sft.learning_rate=1,2"], "dpo.\\* or pairs.\\* only"), (["dpo.beta"], "KEY=V1"),
                       (["dpo.beta=1", "dpo.beta=2"], "twice"), ([], "empty grid")):
        with pytest.raises(SweepError, match=match):
            parse_grid(bad)


def test_rows_best_and_table():
    ev = {"v/accuracy": 0.5, "v/n": 100, "v/ci_low": 0.4, "v/ci_high": 0.6, "v/sound_accuracy": 0.3}
    sft = {"v/accuracy": 0.45, "v/n": 100, "v/sound_accuracy": 0.35}
    r1 = sweep.row({"dpo.beta": "0.1"}, "weighted", ev, sft, {"logps_chosen_delta": -2.5}, "v")
    r2 = sweep.row({"dpo.beta": "0.5"}, "weighted", {**ev, "v/accuracy": 0.55}, sft, {}, "v")
    assert r1["diff_vs_sft"] == pytest.approx(0.05) and r1["sound_diff_vs_sft"] == pytest.approx(-0.05)
    assert sweep.best([r1, r2])["weighted"]["point"] == {"dpo.beta": "0.5"}
    md = sweep.render_markdown({"profile": "tiny", "dataset": "v", "grid": {"dpo.beta": ["0.1", "0.5"]}, "n": 100,
                                "sft_accuracy": 0.45, "rows": [r1, r2], "best": sweep.best([r1, r2]), "commit": "abc"})
    assert "| 0.1 | weighted | 50.0 | [40.0, 60.0] | +5.0 | 30.0 | -5.0 | -2.50 | — | — |" in md
    assert "±9.8 points" in md and "- weighted: dpo.beta=0.5 → 55.0% (+10.0 points vs SFT)" in md
    with pytest.raises(SweepError, match="no test/accuracy"):
        sweep.row({}, "weighted", ev, sft, {}, "test")


@pytest.mark.usefixtures("prefect_api")
def test_sweep_flow_reuses_upstream_and_reads_validation_only(fake_stages, root, base_overrides):
    from flows.sweep import sweep_flow

    overrides = [*base_overrides, "data.validation.n=1"]
    grid = {"dpo.learning_rate": ["0.01", "0.02"], "dpo.beta": ["0.1", "0.2"]}
    out = sweep_flow(PROFILE, overrides, grid, ["weighted", "random"])
    calls = fake_stages.calls(root)
    for stage in ("data", "base", "sft", "sample", "verify", "pairs/weighted", "pairs/random", "evaluate/sft"):
        assert calls.count(stage) == 1, (stage, calls)
    assert calls.count("dpo/weighted") == 4 and calls.count("dpo/random") == 4
    assert "report" not in calls
    rows = out["rows"]
    assert len(rows) == 8 and {r["arm"] for r in rows} == {"weighted", "random"}
    assert all(r["n"] == 2 for r in rows)  # the fake evaluated exactly evaluate.datasets=[synthetic_validation]
    assert out["best"]["weighted"]["point"] == {"dpo.learning_rate": "0.02", "dpo.beta": "0.1"}
    assert out["best"]["weighted"]["diff_vs_sft"] == pytest.approx(0.12)
    report = json.loads((root / "sweep").glob("*/sweep.json").__next__().read_text())
    assert report["dataset"] == "synthetic_validation" and report["commit"]
    md = open(out["report"]).read()
    assert "on synthetic_validation" in md and "none on a test set" in md

    again = sweep_flow(PROFILE, overrides, grid, ["weighted", "random"])
    assert fake_stages.calls(root) == calls  # everything cached the second time
    assert again["rows"] == rows


@pytest.mark.usefixtures("prefect_api")
def test_sweep_needs_a_validation_split(fake_stages, root, base_overrides):
    from flows.sweep import sweep_flow

    with pytest.raises(SweepError, match="set data.validation.n > 0"):
        sweep_flow(PROFILE, [*base_overrides, "data.validation.n=0"], {"dpo.beta": ["0.1"]})
    with pytest.raises(SweepError, match="reads the validation split only"):
        sweep_flow(PROFILE, [*base_overrides, "data.validation.n=1"], {"dpo.beta": ["0.1"]},
                   dataset="synthetic_test")
