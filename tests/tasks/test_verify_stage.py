"""The verify stage: input reading, metrics, the error-share check, and a run with the real MathVerifier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tasks.common.records import Pair, Problem, Sample, read_records, write_jsonl
from tasks.verification.verdicts import (
    VerifyError,
    attach_ids,
    check_error_share,
    read_problems,
    read_samples,
    verdict_metrics,
    verifier_items,
)
from tasks.verify import run_verify
from verifier.verdict import DIMENSIONS, Verdict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_cfg():
    from conf import load_config

    return load_config(ROOT / "conf" / "tiny.yaml")


def verdict(pid, index, correct, wrongness=0.0, status="ok", notes=(), dim=0.0):
    return Verdict(problem_id=pid, index=index, dims=dict.fromkeys(DIMENSIONS, dim), wrongness=wrongness,
                   absurdity=wrongness / 2, correct=correct, status=status, notes=list(notes))


def sample(pid, index, text, lp=-0.3):
    return Sample(problem_id=pid, index=index, text=text, n_tokens=20, logprob_sum=20 * lp, logprob_mean=lp,
                  finish_reason="stop")


# ---------------------------------------------------------------- pure parts


def test_verdict_metrics_by_hand():
    vs = [verdict("a", 0, True, 0.0), verdict("a", 1, False, 0.6, dim=0.5),   # a: mixed
          verdict("b", 0, True, 0.2), verdict("b", 1, True, 0.0),              # b: all correct
          verdict("c", 0, False, 1.0, status="error", dim=1.0),               # c: all incorrect
          verdict("c", 1, False, 0.8, status="unparsed", dim=1.0)]
    m = verdict_metrics(vs)
    assert m["n_verdicts"] == 6 and m["n_problems"] == 3
    assert m["correct_rate"] == pytest.approx(3 / 6)
    assert (m["status_ok"], m["status_unparsed"], m["status_error"], m["status_timeout"]) == (4, 1, 1, 0)
    assert m["error_share"] == pytest.approx(1 / 6)
    assert m["wrongness_mean"] == pytest.approx((0 + 0.6 + 0.2 + 0 + 1.0 + 0.8) / 6)
    assert m["absurdity_mean"] == pytest.approx(m["wrongness_mean"] / 2)
    assert m["dim_symbolic_validity"] == pytest.approx((0.5 + 1.0 + 1.0) / 6)
    assert (m["problems_mixed"], m["problems_all_correct"], m["problems_all_incorrect"]) == (1, 1, 1)


def test_error_share_threshold():
    ok = [verdict("p", i, True) for i in range(18)]
    bad = [verdict("p", 18, False, 1.0, status="error", notes=["math-verify crashed: boom"]),
           verdict("p", 19, False, 1.0, status="timeout", notes=["over 2.0 s"])]
    check_error_share(ok + bad, 0.10)  # 2/20 = 0.10 is not above 0.10
    with pytest.raises(VerifyError) as e:
        check_error_share(ok + bad, 0.05)
    msg = str(e.value)
    assert "2/20" in msg and "0.100" in msg and "verify.max_error_share=0.05" in msg
    assert "p#18 [error]: math-verify crashed: boom" in msg and "over 2.0 s" in msg


def test_read_samples_and_problems(tmp_path):
    write_jsonl(tmp_path / "s" / "samples" / "shard-00001.jsonl", [sample("b", 0, "y", lp=float("nan"))])
    write_jsonl(tmp_path / "s" / "samples" / "shard-00000.jsonl", [sample("a", 0, "x")])
    got = read_samples(tmp_path / "s")
    assert [s.problem_id for s in got] == ["a", "b"]  # shard order
    assert math.isnan(got[1].logprob_mean)  # written as null, read back as NaN
    (tmp_path / "s" / "samples" / "shard-00002.jsonl").write_text('{"problem_id": "c"}\n')
    with pytest.raises(ValueError, match=r"shard-00002.jsonl: line 1 is not a valid Sample"):
        read_samples(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no sample shards"):
        read_samples(tmp_path / "empty")
    p = Problem(id="a", question="q", answer="1", source="t", split="pool")
    write_jsonl(tmp_path / "d" / "pool.jsonl", [p, p])
    with pytest.raises(ValueError, match="line 2: duplicate problem id 'a'"):
        read_problems(tmp_path / "d")


def test_items_and_ids():
    probs = {"a": Problem(id="a", question="q?", answer="4", solution="2+2=4", source="t", split="pool")}
    samples = [sample("a", 5, "2+2=4 #### 4")]
    (item,) = verifier_items(probs, samples)
    assert item == {"question": "q?", "solution": "2+2=4 #### 4", "gold": "4", "reference": "2+2=4",
                    "problem_id": "a", "index": 5}
    with pytest.raises(ValueError, match="problem_id='zz'"):
        verifier_items(probs, [sample("zz", 0, "t")])
    (v,) = attach_ids(samples, [verdict("", 0, True)])
    assert (v.problem_id, v.index) == ("a", 5)
    with pytest.raises(RuntimeError, match="2 verdicts for 1 samples"):
        attach_ids(samples, [verdict("", 0, True)] * 2)


class FakeVerifier:
    """Correct iff the text ends with the gold answer; records the call."""

    def __init__(self):
        self.calls = []

    def score_batch(self, items, workers=1):
        self.calls.append((len(items), workers))
        return [verdict("", 0, it["solution"].strip().endswith(it["gold"]),
                        0.0 if it["solution"].strip().endswith(it["gold"]) else 0.7) for it in items]


def test_run_verify_with_an_injected_verifier(tmp_path, tiny_cfg):
    probs = [Problem(id=f"p{i}", question=f"q{i}", answer=str(i), source="t", split="pool") for i in range(2)]
    write_jsonl(tmp_path / "data" / "pool.jsonl", probs)
    write_jsonl(tmp_path / "sample" / "samples" / "shard-00000.jsonl",
                [sample("p0", 0, "#### 0"), sample("p0", 1, "#### 9"), sample("p1", 0, "#### 1")])
    fake = FakeVerifier()
    m = run_verify(tiny_cfg, tmp_path / "sample", tmp_path / "data", tmp_path / "out", verifier=fake)
    assert fake.calls == [(3, tiny_cfg.verify.workers)]
    vs = read_records(tmp_path / "out" / "verdicts.jsonl", Verdict)
    assert [(v.problem_id, v.index, v.correct) for v in vs] == [("p0", 0, True), ("p0", 1, False),
                                                               ("p1", 0, True)]
    assert m["correct_rate"] == pytest.approx(2 / 3) and m["problems_mixed"] == 1
    assert (tmp_path / "out" / "dims.png").read_bytes()[:4] == b"\x89PNG"
    # the verifier's shipped quality report goes with its verdicts, its headline numbers into the metrics
    rep = json.loads((tmp_path / "out" / "verifier_report.json").read_text())
    assert rep["verifier"]["verifier_version"] == m["verifier_version"]
    assert m["verifier_report_prm800k_step_auroc"] == rep["prm800k"]["auroc"]


# ---------------------------------------------------------------- with the real MathVerifier

NATALIA_OK = ("Natalia sold 48 / 2 = 24 clips in May.\nAltogether she sold 48 + 24 = 72 clips.\n"
              "The answer is \\boxed{72}.")
NATALIA_ARITH = ("Natalia sold 48 / 2 = 24 clips in May.\nAltogether she sold 48 + 24 = 70 clips.\n"
                 "The answer is \\boxed{70}.")
NATALIA_DOUBLE = ("Natalia sold 48 * 2 = 96 clips in May.\nAltogether she sold 48 + 96 = 144 clips.\n"
                  "The answer is \\boxed{144}.")
WENG_OK = "Weng earns 12 / 60 = 0.2 dollars per minute.\nFor 50 minutes she earns 0.2 * 50 = 10.\n#### 10"
WENG_NOANSWER = "banana banana the the the"


def gsm8k_fixture(shared_data: Path, tmp_path: Path):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open().readlines()[:2]]
    probs = [Problem(id=f"gsm8k_train-{i}", question=r["question"], answer=r["answer"].split("####")[-1].strip(),
                     solution=r["answer"], source="gsm8k", split="train") for i, r in enumerate(rows)]
    assert [p.answer for p in probs] == ["72", "10"]
    samples = [sample("gsm8k_train-0", 0, NATALIA_OK, -0.2), sample("gsm8k_train-0", 1, NATALIA_ARITH, -0.3),
               sample("gsm8k_train-0", 2, NATALIA_DOUBLE, -0.1), sample("gsm8k_train-1", 0, WENG_OK, -0.4),
               sample("gsm8k_train-1", 1, WENG_NOANSWER, -2.5)]
    write_jsonl(tmp_path / "data" / "pool.jsonl", probs)
    write_jsonl(tmp_path / "sample" / "samples" / "shard-00000.jsonl", samples[:3])
    write_jsonl(tmp_path / "sample" / "samples" / "shard-00001.jsonl", samples[3:])
    write_jsonl(tmp_path / "sample" / "prompts.jsonl", [{"problem_id": p.id, "prompt": p.question + "\nBox it."}
                                                        for p in probs])
    return tmp_path / "sample", tmp_path / "data"


def test_verify_stage_with_the_math_verifier(shared_data, tmp_path, tiny_cfg):
    from verifier import MathVerifier  # noqa: F401  (the stage must work with the real verifier)

    sample_dir, data_dir = gsm8k_fixture(shared_data, tmp_path)
    m = run_verify(tiny_cfg, sample_dir, data_dir, tmp_path / "verify")
    vs = {(v.problem_id, v.index): v for v in read_records(tmp_path / "verify" / "verdicts.jsonl", Verdict)}
    assert [vs[k].correct for k in sorted(vs)] == [True, False, False, True, False]
    assert all(set(v.dims) == set(DIMENSIONS) and all(0 <= x <= 1 for x in v.dims.values()) for v in vs.values())
    assert vs[("gsm8k_train-0", 1)].wrongness > vs[("gsm8k_train-0", 0)].wrongness
    assert vs[("gsm8k_train-1", 1)].status in ("unparsed", "ok")
    assert m["n_verdicts"] == 5 and m["correct_rate"] == pytest.approx(2 / 5) and m["problems_mixed"] == 2
    assert (tmp_path / "verify" / "dims.png").is_file()

    # and the pairs stage on top of it, with the verifier's similarity
    from tasks.pairs import run_pairs

    assert vs[("gsm8k_train-1", 1)].degenerate == "no_answer" and m["degenerate_no_answer"] == 1
    stats = run_pairs(tiny_cfg, "weighted", sample_dir, tmp_path / "verify", data_dir, tmp_path / "pairs")
    # Weng's only negative has no stated answer: a degenerate sample, not a hard negative by default
    assert stats["n_pairs"] == 2 and stats["problems_with_pairs"] == 1 and stats["skipped_no_negatives"] == 1
    assert stats["samples_degenerate_no_answer"] == 1
    pairs = read_records(tmp_path / "pairs" / "pairs.jsonl", Pair)
    assert {p.prompt for p in pairs} == {read_records(data_dir / "pool.jsonl", Problem)[0].question + "\nBox it."}
    assert all(math.isfinite(stats[k]) for k in ("weight_mean", "weight_min", "weight_max", "hardness_mean"))


def test_verify_stage_fails_when_errors_pass_the_threshold(shared_data, tmp_path, tiny_cfg, monkeypatch):
    from verifier import MathVerifier

    def broken(self, items, workers=1):
        return [Verdict(dims=dict.fromkeys(DIMENSIONS, 1.0), wrongness=1.0, absurdity=1.0, correct=False,
                        status="error" if i % 2 == 0 else "ok", notes=[f"injected failure {i}"])
                for i, _ in enumerate(items)]

    monkeypatch.setattr(MathVerifier, "score_batch", broken)
    sample_dir, data_dir = gsm8k_fixture(shared_data, tmp_path)
    with pytest.raises(VerifyError, match=r"3/5 samples \(share 0.600 > verify.max_error_share=0.05") as e:
        run_verify(tiny_cfg, sample_dir, data_dir, tmp_path / "verify")
    assert "injected failure 0" in str(e.value)
    assert not (tmp_path / "verify" / "verdicts.jsonl").exists()


def test_near_miss_beats_truncated_and_looping_negatives(shared_data, tmp_path, tiny_cfg):
    """Hand-made Natalia samples, scored by the real verifier: a truncated output whose last number is the gold
    is never correct, and the hard negative is the near miss, not the truncated or looping output (which the
    model is made *more* confident in here)."""
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open().readlines()[:1]]
    prob = Problem(id="g-0", question=rows[0]["question"], answer="72", solution=rows[0]["answer"], source="gsm8k",
                   split="train")
    truncated = "Natalia sold 48 / 2 = 24 clips in May.\nAltogether she sold 48 + 24 = 72"
    looping = "Natalia sold 48 / 2 = 24 clips in May.\n" * 6 + "The answer is \\boxed{24}."
    samples = [sample("g-0", 0, NATALIA_OK, -0.3), sample("g-0", 1, NATALIA_DOUBLE, -0.3),
               sample("g-0", 2, truncated, -0.05).model_copy(update={"finish_reason": "length"}),
               sample("g-0", 3, looping, -0.05)]
    write_jsonl(tmp_path / "data" / "pool.jsonl", [prob])
    write_jsonl(tmp_path / "sample" / "samples" / "shard-00000.jsonl", samples)
    write_jsonl(tmp_path / "sample" / "prompts.jsonl", [{"problem_id": "g-0", "prompt": prob.question}])
    run_verify(tiny_cfg, tmp_path / "sample", tmp_path / "data", tmp_path / "verify")
    vs = {v.index: v for v in read_records(tmp_path / "verify" / "verdicts.jsonl", Verdict)}
    assert vs[2].degenerate == "truncated" and not vs[2].correct and vs[3].degenerate == "looping"
    assert vs[0].correct and vs[0].degenerate is None and not vs[1].correct

    from tasks.pairs import run_pairs

    cfg = tiny_cfg.model_copy(update={"pairs": tiny_cfg.pairs.model_copy(update={"per_problem": 1})})
    stats = run_pairs(cfg, "weighted", tmp_path / "sample", tmp_path / "verify", tmp_path / "data", tmp_path / "p")
    (pair,) = read_records(tmp_path / "p" / "pairs.jsonl", Pair)
    assert (pair.chosen_index, pair.rejected_index) == (0, 1)
    assert stats["samples_degenerate_truncated"] == 1 and stats["samples_degenerate_looping"] == 1
