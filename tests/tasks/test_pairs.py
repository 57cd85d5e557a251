"""The pairs stage on hand-made samples/verdicts where hard negatives and weights are worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conf.schema import PairsConfig
from tasks.pairs import NoPairsError, build_pairs, final_weights, run_pairs
from tasks.records import DIMENSIONS, Pair, Problem, Sample, read_records, write_jsonl
from verifier.verdict import Verdict


def problem(pid: str, solution: str | None = "ref: 2 + 2 = 4. #### 4") -> Problem:
    return Problem(id=pid, question=f"question of {pid}", answer="4", solution=solution, source="t",
                   split="pool")


def sample(pid: str, index: int, lp: float, text: str | None = None) -> Sample:
    return Sample(problem_id=pid, index=index, text=text if text is not None else f"{pid}-s{index}",
                  n_tokens=10, logprob_sum=lp * 10, logprob_mean=lp, finish_reason="stop")


def verdict(pid: str, index: int, correct: bool, wrongness: float = 0.0, absurdity: float = 0.0,
            status: str = "ok") -> Verdict:
    return Verdict(problem_id=pid, index=index, dims=dict.fromkeys(DIMENSIONS, wrongness),
                   wrongness=wrongness, absurdity=absurdity, correct=correct, status=status)


def table_similarity(table: dict[tuple[str, str], float]):
    """similarity_fn from a lookup table (rejected text, positive text) -> value; 0 when absent."""
    return lambda a, b: table.get((a, b), 0.0)


def no_sim(a: str, b: str) -> float:
    return 0.0


# One problem, two correct and three incorrect samples. Features (lp = logprob_mean):
#   s0 correct   wrongness 0.1              lp -0.5
#   s1 correct   wrongness 0.0              lp -0.9   -> chosen (lowest wrongness), c_c = e^-0.9
#   s2 incorrect wrongness 0.6 absurd 0.2   lp -0.2   sim to s0 0.9, to s1 0.7 -> s = 0.9
#   s3 incorrect wrongness 0.9 absurd 0.8   lp -1.2   sim 0.1 / 0.2            -> s = 0.2
#   s4 incorrect wrongness 0.5 absurd 0.0   lp -0.7   sim 0.5 / 0.4            -> s = 0.5
P1 = [problem("p1")]
S1 = [sample("p1", 0, -0.5), sample("p1", 1, -0.9), sample("p1", 2, -0.2), sample("p1", 3, -1.2),
      sample("p1", 4, -0.7)]
V1 = [verdict("p1", 0, True, 0.1), verdict("p1", 1, True, 0.0), verdict("p1", 2, False, 0.6, 0.2),
      verdict("p1", 3, False, 0.9, 0.8), verdict("p1", 4, False, 0.5, 0.0)]
SIM1 = table_similarity({("p1-s2", "p1-s0"): 0.9, ("p1-s2", "p1-s1"): 0.7, ("p1-s3", "p1-s0"): 0.1,
                         ("p1-s3", "p1-s1"): 0.2, ("p1-s4", "p1-s0"): 0.5, ("p1-s4", "p1-s1"): 0.4})
c = math.exp


def test_hardness_selection_and_weights_by_hand():
    cfg = PairsConfig()  # hardness (1, 1, 0.5, 0.25); weights a=1 b=1 g=0.5; clip [0.2, 3]; lam 0.3
    pairs, stats = build_pairs(P1, S1, V1, cfg, "weighted", SIM1)
    # hardness = c + s + 0.5*wrongness + 0.25*absurdity
    h2 = c(-0.2) + 0.9 + 0.5 * 0.6 + 0.25 * 0.2  # 0.8187 + 0.9 + 0.3 + 0.05 = 2.0687
    h3 = c(-1.2) + 0.2 + 0.5 * 0.9 + 0.25 * 0.8  # 0.3012 + 0.2 + 0.45 + 0.2 = 1.1512
    h4 = c(-0.7) + 0.5 + 0.5 * 0.5 + 0.25 * 0.0  # 0.4966 + 0.5 + 0.25       = 1.2466
    assert h2 > h4 > h3
    assert [(p.chosen_index, p.rejected_index) for p in pairs] == [(1, 2), (1, 4)]
    assert [p.hardness for p in pairs] == pytest.approx([h2, h4])
    assert [p.similarity for p in pairs] == pytest.approx([0.9, 0.5])
    # log ppl of all incorrect candidates X = {0.2, 1.2, 0.7}: norm(s2) = 0, norm(s4) = 0.5/1.0 = 0.5
    raw2 = 0.6 + (c(-0.2) - c(-0.9)) + 0.5 * 0.0  # 0.6 + 0.4121 + 0 = 1.0121
    raw4 = 0.5 + (c(-0.7) - c(-0.9)) + 0.5 * 0.5  # 0.5 + 0.0900 + 0.25 = 0.8400
    mean = (raw2 + raw4) / 2  # 0.9261
    w2, w4 = 0.7 + 0.3 * raw2 / mean, 0.7 + 0.3 * raw4 / mean  # 1.0279, 0.9721
    assert [p.weight_raw for p in pairs] == pytest.approx([raw2, raw4])
    assert [p.weight for p in pairs] == pytest.approx([w2, w4])
    assert not any(p.clipped for p in pairs)
    p2 = pairs[0]
    assert p2.prompt == "question of p1" and p2.chosen == "p1-s1" and p2.rejected == "p1-s2"
    assert p2.confidence_chosen == pytest.approx(c(-0.9)) and p2.confidence_rejected == pytest.approx(c(-0.2))
    assert p2.perplexity == pytest.approx(c(0.2)) and (p2.wrongness, p2.absurdity) == (0.6, 0.2)
    assert stats["n_pairs"] == 2 and stats["problems_with_pairs"] == 1 and stats["clipped"] == 0
    assert stats["weight_mean"] == pytest.approx((w2 + w4) / 2)
    assert stats["hardness_mean"] == pytest.approx((h2 + h4) / 2)


def test_clipping_counts_and_bounds_the_ratio():
    # ratios from the hand example: raw2/mean = 1.0929, raw4/mean = 0.9071
    cfg = PairsConfig(w_min=0.95, w_max=1.05, lam=0.5)
    pairs, stats = build_pairs(P1, S1, V1, cfg, "weighted", SIM1)
    assert [p.weight for p in pairs] == pytest.approx([0.5 + 0.5 * 1.05, 0.5 + 0.5 * 0.95])
    assert [p.clipped for p in pairs] == [True, True] and stats["clipped"] == 2


def test_final_weights_formula_and_all_zero_raw():
    cfg = PairsConfig(w_min=0.5, w_max=2.0, lam=1.0)
    # mean 1.0 -> ratios 0.1 (clipped to 0.5), 0.9, 2.0 (not clipped: at the bound)
    assert final_weights(cfg, [0.1, 0.9, 2.0]) == [(0.5, True), (0.9, False), (2.0, False)]
    assert final_weights(PairsConfig(lam=0.3), [0.0, 0.0]) == [(1.0, False), (1.0, False)]


def test_uniform_takes_the_same_hard_negatives_with_unit_weight():
    pairs, stats = build_pairs(P1, S1, V1, PairsConfig(), "uniform", SIM1)
    assert [p.rejected_index for p in pairs] == [2, 4]
    assert all(p.weight == 1.0 and p.strategy == "uniform" for p in pairs)
    assert pairs[0].weight_raw == pytest.approx(0.6 + c(-0.2) - c(-0.9))  # still reported
    assert stats["weight_std"] == 0.0


def test_per_problem_and_hardness_coefficients_change_the_pick():
    # only absurdity counts: s3 (0.8) > s2 (0.2) > s4 (0.0)
    cfg = PairsConfig(per_problem=1, hardness={"confidence": 0, "similarity": 0, "wrongness": 0, "absurdity": 1})
    pairs, _ = build_pairs(P1, S1, V1, cfg, "weighted", SIM1)
    assert [p.rejected_index for p in pairs] == [3]
    assert pairs[0].hardness == pytest.approx(0.8)


def test_chosen_tie_on_wrongness_goes_to_the_most_confident():
    s = [sample("p", 0, -0.9), sample("p", 1, -0.3), sample("p", 2, -0.5)]
    v = [verdict("p", 0, True, 0.1), verdict("p", 1, True, 0.1), verdict("p", 2, False, 0.7)]
    pairs, _ = build_pairs([problem("p")], s, v, PairsConfig(), "weighted", no_sim)
    assert pairs[0].chosen_index == 1 and pairs[0].confidence_chosen == pytest.approx(c(-0.3))


def test_identical_incorrect_texts_are_deduplicated():
    s = [sample("p", 0, -0.1, "right"), sample("p", 1, -0.2, "wrong A"), sample("p", 2, -0.2, " wrong A\n"),
         sample("p", 3, -0.4, "wrong B")]
    v = [verdict("p", 0, True), verdict("p", 1, False, 0.5), verdict("p", 2, False, 0.5),
         verdict("p", 3, False, 0.5)]
    for strategy in ("weighted", "uniform", "random"):
        pairs, stats = build_pairs([problem("p")], s, v, PairsConfig(per_problem=3), strategy, no_sim)
        assert sorted(p.rejected_index for p in pairs) == [1, 3], strategy
        assert stats["duplicates_removed"] == 1


def test_all_correct_all_incorrect_no_samples_no_verdicts_are_counted():
    probs = [problem("mixed"), problem("allc"), problem("alli", solution=None), problem("none"),
             problem("errs")]
    s = [sample("mixed", 0, -0.1), sample("mixed", 1, -0.2), sample("allc", 0, -0.1), sample("allc", 1, -0.1),
         sample("alli", 0, -0.1), sample("alli", 1, -0.3), sample("errs", 0, -0.1), sample("errs", 1, -0.1)]
    v = [verdict("mixed", 0, True), verdict("mixed", 1, False, 0.6), verdict("allc", 0, True),
         verdict("allc", 1, True), verdict("alli", 0, False, 0.6), verdict("alli", 1, False, 0.6),
         verdict("errs", 0, False, 1.0, status="error"), verdict("errs", 1, False, 1.0, status="timeout"),
         verdict("ghost", 0, True)]
    pairs, stats = build_pairs(probs, s, v, PairsConfig(), "weighted", no_sim)
    assert [p.problem_id for p in pairs] == ["mixed"]
    assert stats["skipped_all_correct"] == 1
    assert stats["skipped_all_incorrect"] == 1 and stats["problems_all_incorrect"] == 1  # no reference
    assert stats["skipped_no_samples"] == 1 and stats["skipped_no_verdicts"] == 1
    assert stats["samples_unverified"] == 2 and stats["verdicts_without_sample"] == 1
    # a single pair whose ratio is 1 -> weight (1 - 0.3) + 0.3 * 1 = 1
    assert pairs[0].weight == pytest.approx(1.0)


def test_unparsed_counts_as_incorrect_and_missing_verdicts_are_counted():
    s = [sample("p", 0, -0.1), sample("p", 1, -0.2), sample("p", 2, -0.3)]
    v = [verdict("p", 0, True), verdict("p", 1, False, 1.0, status="unparsed")]
    pairs, stats = build_pairs([problem("p")], s, v, PairsConfig(), "weighted", no_sim)
    assert [p.rejected_index for p in pairs] == [1] and stats["samples_missing_verdict"] == 1


def test_reference_is_chosen_when_no_sample_is_correct():
    s = [sample("p", 0, -0.2), sample("p", 1, -1.0)]
    v = [verdict("p", 0, False, 0.8), verdict("p", 1, False, 0.4)]
    sim = table_similarity({("p-s0", "REF"): 0.6, ("p-s1", "REF"): 0.3})
    pairs, stats = build_pairs([problem("p", solution="REF")], s, v, PairsConfig(per_problem=1), "weighted", sim)
    # reference confidence = mean sample confidence = (e^-0.2 + e^-1.0) / 2 = (0.8187 + 0.3679) / 2 = 0.5933
    c_ref = (c(-0.2) + c(-1.0)) / 2
    # hardness s0 = 0.8187 + 0.6 + 0.4 = 1.8187 ; s1 = 0.3679 + 0.3 + 0.2 = 0.8679 -> s0
    (p,) = pairs
    assert (p.chosen, p.chosen_index, p.rejected_index) == ("REF", None, 0)
    assert p.confidence_chosen == pytest.approx(c_ref) and p.similarity == pytest.approx(0.6)
    # X = {0.2, 1.0}, norm(s0) = 0 -> raw = 0.8 + (0.8187 - 0.5933) = 1.0254; single pair -> weight 1
    assert p.weight_raw == pytest.approx(0.8 + c(-0.2) - c_ref) and p.weight == pytest.approx(1.0)
    assert stats["problems_reference_chosen"] == 1 and stats["problems_all_incorrect"] == 1
    off, stats = build_pairs([problem("p", solution="REF")], s, v, PairsConfig(fallback_to_reference=False),
                             "weighted", sim)
    assert off == [] and stats["skipped_all_incorrect"] == 1


def test_nonfinite_logprobs_get_the_least_confident_finite_value_and_are_counted():
    s = [sample("p", 0, -0.5), sample("p", 1, float("nan")), sample("p", 2, float("-inf")),
         sample("p", 3, -2.0), sample("q", 0, float("nan")), sample("q", 1, float("inf"))]
    v = [verdict("p", 0, True), verdict("p", 1, False, 0.5), verdict("p", 2, False, 0.5),
         verdict("p", 3, False, 0.5), verdict("q", 0, True), verdict("q", 1, False, 0.5)]
    cfg = PairsConfig(per_problem=3, fallback_logprob_mean=-3.0)
    pairs, stats = build_pairs([problem("p"), problem("q")], s, v, cfg, "weighted", no_sim)
    assert stats["nonfinite_logprobs"] == 4
    assert all(math.isfinite(x) for p in pairs for x in (p.weight, p.weight_raw, p.hardness, p.perplexity,
                                                         p.confidence_rejected, p.confidence_chosen))
    by = {(p.problem_id, p.rejected_index): p for p in pairs}
    # p: NaN and -inf take the problem's least confident finite lp, -2.0
    assert by[("p", 1)].confidence_rejected == pytest.approx(c(-2.0))
    assert by[("p", 2)].perplexity == pytest.approx(c(2.0))
    # q: no finite lp at all -> pairs.fallback_logprob_mean = -3.0 for both samples
    assert by[("q", 1)].confidence_rejected == pytest.approx(c(-3.0))
    assert by[("q", 1)].confidence_chosen == pytest.approx(c(-3.0))


def test_random_strategy_is_seeded_per_problem_and_order_independent():
    probs = [problem(f"p{i}") for i in range(8)]
    s = [sample(f"p{i}", j, -0.1 * j) for i in range(8) for j in range(7)]
    v = [verdict(f"p{i}", j, j == 0, 0.0 if j == 0 else 0.5) for i in range(8) for j in range(7)]
    cfg = PairsConfig(per_problem=2, seed=3)

    def picks(ps, ss, vs, cfg):
        pairs, _ = build_pairs(ps, ss, vs, cfg, "random", no_sim)
        return sorted((p.problem_id, p.rejected_index) for p in pairs)

    first = picks(probs, s, v, cfg)
    assert len(first) == 16 and all(p[1] != 0 for p in first)
    assert picks(probs[::-1], s[::-1], v[::-1], cfg) == first
    assert picks(probs[:3], [x for x in s if x.problem_id in {"p0", "p1", "p2"}], v, cfg) == first[:6]
    assert picks(probs, s, v, PairsConfig(per_problem=2, seed=4)) != first
    # the hardness order would take the most confident negatives (indices 1, 2) everywhere
    assert {r for _, r in first} != {1, 2}
    pairs, _ = build_pairs(probs, s, v, cfg, "random", no_sim)
    assert all(p.weight == 1.0 and p.strategy == "random" for p in pairs)


def test_norm_is_zero_when_all_perplexities_are_equal():
    s = [sample("p", 0, -0.5), sample("p", 1, -0.5), sample("p", 2, -0.5)]
    v = [verdict("p", 0, True), verdict("p", 1, False, 0.2), verdict("p", 2, False, 0.6)]
    pairs, _ = build_pairs([problem("p")], s, v, PairsConfig(), "weighted", no_sim)
    assert sorted(p.weight_raw for p in pairs) == pytest.approx([0.2, 0.6])  # no gap, norm 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="strategy 'best'"):
        build_pairs(P1, S1, V1, PairsConfig(), "best", SIM1)
    with pytest.raises(ValueError, match="problem_id='zz'"):
        build_pairs(P1, [*S1, sample("zz", 0, -0.1)], V1, PairsConfig(), "weighted", SIM1)


# ---------------------------------------------------------------- the stage shell


def write_inputs(tmp_path, problems, samples, verdicts):
    sample_dir, verify_dir, data_dir = tmp_path / "sample", tmp_path / "verify", tmp_path / "data"
    write_jsonl(sample_dir / "samples" / "shard-00000.jsonl", samples[: len(samples) // 2])
    write_jsonl(sample_dir / "samples" / "shard-00001.jsonl", samples[len(samples) // 2:])
    write_jsonl(verify_dir / "verdicts.jsonl", verdicts)
    write_jsonl(data_dir / "pool.jsonl", problems)
    return sample_dir, verify_dir, data_dir


def test_run_pairs_writes_pairs_stats_and_plots(tmp_path, tiny_cfg):
    s = [*S1[:4], sample("p1", 4, float("nan"))]  # NaN is written as null and read back as NaN
    dirs = write_inputs(tmp_path, P1, s, V1)
    out = tmp_path / "out"
    stats = run_pairs(tiny_cfg, "weighted", *dirs, out, similarity_fn=SIM1)
    pairs = read_records(out / "pairs.jsonl", Pair)
    # s4's lp becomes the least confident finite lp, -1.2: h4 = 0.3012 + 0.5 + 0.25 = 1.0512 < h3 = 1.1512
    assert [(p.chosen_index, p.rejected_index) for p in pairs] == [(1, 2), (1, 3)]
    assert pairs[1].hardness == pytest.approx(c(-1.2) + 0.2 + 0.45 + 0.2)
    assert stats["nonfinite_logprobs"] == 1 and stats["n_pairs"] == 2
    assert json.loads((out / "stats.json").read_text()) == stats
    for png in ("weights.png", "hardness.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_run_pairs_with_zero_pairs_raises_with_the_reason(tmp_path, tiny_cfg):
    probs = [problem("a"), problem("b", solution=None), problem("c")]
    s = [sample("a", 0, -0.1), sample("a", 1, -0.1), sample("b", 0, -0.1)]
    v = [verdict("a", 0, True), verdict("a", 1, True), verdict("b", 0, False, 0.9)]
    dirs = write_inputs(tmp_path, probs, s, v)
    with pytest.raises(NoPairsError) as e:
        run_pairs(tiny_cfg, "weighted", *dirs, tmp_path / "out", similarity_fn=no_sim)
    msg = str(e.value)
    assert "1 problems had only correct samples" in msg
    assert "1 only incorrect samples and no usable reference" in msg
    assert "1 had no samples" in msg
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


@pytest.fixture
def tiny_cfg():
    from conf import load_config

    return load_config(Path(__file__).resolve().parents[2] / "conf" / "tiny.yaml")
