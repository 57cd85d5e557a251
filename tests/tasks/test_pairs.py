"""The pairs stage on hand-made samples/verdicts where hard negatives and weights are worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conf.schema import PairsConfig
from tasks.common.records import Pair, Problem, Sample, read_records, write_jsonl
from tasks.pairing.pairs import NoPairsError, build_pairs, final_weights, midranks, spearman, variance_shares
from tasks.pairs import run_pairs
from verifier.verdict import DIMENSIONS, Verdict


def problem(pid: str, solution: str | None = "ref: 2 + 2 = 4. The answer is $\\boxed{4}$.") -> Problem:
    return Problem(id=pid, question=f"question of {pid}", answer="4", solution=solution, source="t",
                   split="pool")


def sample(pid: str, index: int, lp: float, text: str | None = None, finish: str = "stop") -> Sample:
    return Sample(problem_id=pid, index=index, text=text if text is not None else f"{pid}-s{index}",
                  n_tokens=10, logprob_sum=lp * 10, logprob_mean=lp, finish_reason=finish)


def verdict(pid: str, index: int, correct: bool, wrongness: float = 0.0, absurdity: float = 0.0,
            status: str = "ok", first_error_step: int | None = None, degenerate: str | None = None) -> Verdict:
    """Every dimension but answer_correctness at ``wrongness``, so the process wrongness is ``wrongness``."""
    dims = {**dict.fromkeys(DIMENSIONS, wrongness), "answer_correctness": 0.0 if correct else 1.0}
    return Verdict(problem_id=pid, index=index, dims=dims, wrongness=wrongness, absurdity=absurdity,
                   correct=correct, status=status, first_error_step=first_error_step, degenerate=degenerate)


def prompts_of(problems) -> dict[str, str]:
    return {p.id: f"{p.question}\nINSTRUCTION" for p in problems}


def build(problems, samples, verdicts, cfg, strategy, sim, **kw):
    return build_pairs(problems, samples, verdicts, cfg, strategy, sim, prompts=prompts_of(problems), **kw)


def table_similarity(table: dict[tuple[str, str], float]):
    """similarity_fn from a lookup table (rejected text, positive text) -> value; 0 when absent."""
    return lambda a, b: table.get((a, b), 0.0)


def no_sim(a: str, b: str) -> float:
    return 0.0


# One problem, two correct (sound) and three incorrect samples. Features (lp = logprob_mean):
#   s0 correct   wrongness 0.1              lp -0.5
#   s1 correct   wrongness 0.0              lp -0.9   -> chosen (lowest wrongness), lp_c = -0.9
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
ORIGINAL = {"weights": {"formula": "original"},
            "hardness": {"confidence": 1.0, "similarity": 1.0, "wrongness": 0.5, "absurdity": 0.25}}


def test_prompt_is_the_user_turn_sampling_used():
    pairs, _ = build(P1, S1, V1, PairsConfig(), "weighted", SIM1)
    assert {p.prompt for p in pairs} == {"question of p1\nINSTRUCTION"}
    with pytest.raises(ValueError, match="no sampling prompt for 1 problems"):
        build_pairs(P1, S1, V1, PairsConfig(), "weighted", SIM1, prompts={})


def test_ranked_weights_by_hand():
    """Default formula: mid-ranks of process wrongness, log-prob gap and the rejected's log-prob."""
    cfg = PairsConfig(per_problem=3)  # hardness (1, 1, 0.5, -0.5); a=1 b=1 g=0.5; clip [0.2, 3]; lam 0.3
    pairs, stats = build(P1, S1, V1, cfg, "weighted", SIM1)
    h2 = c(-0.2) + 0.9 + 0.5 * 0.6 - 0.5 * 0.2  # 1.9187
    h3 = c(-1.2) + 0.2 + 0.5 * 0.9 - 0.5 * 0.8  # 0.5512
    h4 = c(-0.7) + 0.5 + 0.5 * 0.5 - 0.5 * 0.0  # 1.2466
    assert [p.rejected_index for p in pairs] == [2, 4, 3]
    assert [p.hardness for p in pairs] == pytest.approx([h2, h4, h3])
    # R(W): s4 1/6, s2 3/6, s3 5/6; R(gap) = R(lp_r): s3 1/6, s4 3/6, s2 5/6
    raw2, raw4, raw3 = 0.5 + 5 / 6 + 0.5 * 5 / 6, 1 / 6 + 0.5 + 0.5 * 0.5, 5 / 6 + 1 / 6 + 0.5 / 6
    assert [p.weight_raw for p in pairs] == pytest.approx([raw2, raw4, raw3])  # 1.75, 0.9167, 1.0833
    mean = (raw2 + raw3 + raw4) / 3  # 1.25
    assert [p.weight for p in pairs] == pytest.approx([0.7 + 0.3 * r / mean for r in (raw2, raw4, raw3)])
    assert stats["weight_mean"] == pytest.approx(1.0)
    assert [p.logprob_gap for p in pairs] == pytest.approx([0.7, 0.2, -0.3])
    assert [p.process_wrongness for p in pairs] == pytest.approx([0.6, 0.5, 0.9])
    # the confident error weighs most: the weight rises with the rejected's confidence
    assert stats["weight_spearman_confidence"] == pytest.approx(0.5)  # ranks (3, 1, 2) vs (3, 2, 1)
    shares = [stats[f"weight_share_{k}"] for k in ("wrongness", "gap", "confidence")]
    assert sum(shares) == pytest.approx(1.0) and shares[1] > shares[0]
    p2 = pairs[0]
    assert p2.chosen == "p1-s1" and p2.rejected == "p1-s2" and p2.chosen_sound and p2.rejected_kind == "incorrect"
    assert p2.confidence_chosen == pytest.approx(c(-0.9)) and p2.confidence_rejected == pytest.approx(c(-0.2))
    assert p2.perplexity == pytest.approx(c(0.2)) and (p2.wrongness, p2.absurdity) == (0.6, 0.2)


def test_one_outlier_logprob_does_not_rescale_the_run():
    """Min-max normalisation (original) lets one -10 log-prob squash every other term; ranks do not."""
    probs = [problem(f"q{i}") for i in range(4)]
    lps = [-0.2, -0.3, -0.4, -10.0]  # the last one: a fallback-like outlier
    s = [x for i, lp in enumerate(lps) for x in (sample(f"q{i}", 0, -0.5), sample(f"q{i}", 1, lp))]
    v = [x for i in range(4) for x in (verdict(f"q{i}", 0, True), verdict(f"q{i}", 1, False, 0.5))]
    only_ppl = {"a": 0.0, "b": 0.0, "g": 1.0}  # the perplexity / confidence term alone
    ranked, _ = build(probs, s, v, PairsConfig(weights=only_ppl), "weighted", no_sim)
    original, _ = build(probs, s, v, PairsConfig(weights={**only_ppl, "formula": "original"}), "weighted", no_sim)
    spread = {name: max(p.weight_raw for p in ps[:3]) - min(p.weight_raw for p in ps[:3])
              for name, ps in (("ranked", ranked), ("original", original))}
    # the three ordinary pairs keep their spread under ranks (7/8, 5/8, 3/8); min-max squashes them to ~0.02
    assert spread["ranked"] == pytest.approx(0.5) and spread["original"] < 0.03


def test_original_formula_is_kept_as_a_named_variant():
    cfg = PairsConfig(**ORIGINAL)
    pairs, stats = build(P1, S1, V1, cfg, "weighted", SIM1)
    h2 = c(-0.2) + 0.9 + 0.5 * 0.6 + 0.25 * 0.2
    h4 = c(-0.7) + 0.5 + 0.5 * 0.5 + 0.25 * 0.0
    assert [(p.chosen_index, p.rejected_index) for p in pairs] == [(1, 2), (1, 4)]
    assert [p.hardness for p in pairs] == pytest.approx([h2, h4])
    # log ppl of all incorrect candidates X = {0.2, 1.2, 0.7}: norm(s2) = 0, norm(s4) = 0.5/1.0 = 0.5
    raw2 = 0.6 + (c(-0.2) - c(-0.9)) + 0.5 * 0.0
    raw4 = 0.5 + (c(-0.7) - c(-0.9)) + 0.5 * 0.5
    mean = (raw2 + raw4) / 2
    assert [p.weight_raw for p in pairs] == pytest.approx([raw2, raw4])
    assert [p.weight for p in pairs] == pytest.approx([0.7 + 0.3 * raw2 / mean, 0.7 + 0.3 * raw4 / mean])
    assert stats["weight_formula"] == "original" and stats["clipped"] == 0


def test_clipping_counts_and_bounds_the_ratio():
    cfg = PairsConfig(w_min=0.95, w_max=1.05, lam=0.5, **ORIGINAL)  # ratios 1.0929, 0.9071
    pairs, stats = build(P1, S1, V1, cfg, "weighted", SIM1)
    assert [p.weight for p in pairs] == pytest.approx([0.5 + 0.5 * 1.05, 0.5 + 0.5 * 0.95])
    assert [p.clipped for p in pairs] == [True, True] and stats["clipped"] == 2


def test_final_weights_formula_and_all_zero_raw():
    cfg = PairsConfig(w_min=0.5, w_max=2.0, lam=1.0, weights={"formula": "original"})
    # mean 1.0 -> ratios 0.1 (clipped to 0.5), 0.9, 2.0 (not clipped: at the bound)
    assert final_weights(cfg, [0.1, 0.9, 2.0]) == [(0.5, True), (0.9, False), (2.0, False)]
    assert final_weights(PairsConfig(lam=0.3), [0.0, 0.0]) == [(1.0, False), (1.0, False)]
    # ranked: the clipped ratios are rescaled to mean 1
    ranked = final_weights(PairsConfig(w_min=0.5, w_max=2.0, lam=1.0), [0.1, 0.9, 2.0])
    assert sum(w for w, _ in ranked) / 3 == pytest.approx(1.0) and [f for _, f in ranked] == [True, False, False]


def test_uniform_takes_the_same_hard_negatives_with_unit_weight():
    pairs, stats = build(P1, S1, V1, PairsConfig(), "uniform", SIM1)
    assert [p.rejected_index for p in pairs] == [2, 4]
    assert all(p.weight == 1.0 and p.strategy == "uniform" for p in pairs)
    assert all(p.weight_raw > 0 for p in pairs)  # still reported
    assert stats["weight_std"] == 0.0


def test_per_problem_and_hardness_coefficients_change_the_pick():
    # only absurdity counts: s3 (0.8) > s2 (0.2) > s4 (0.0)
    cfg = PairsConfig(per_problem=1, hardness={"confidence": 0, "similarity": 0, "wrongness": 0, "absurdity": 1})
    pairs, _ = build(P1, S1, V1, cfg, "weighted", SIM1)
    assert [p.rejected_index for p in pairs] == [3]
    assert pairs[0].hardness == pytest.approx(0.8)


# ---------------------------------------------------------------- chosen means sound


def test_unsound_correct_is_never_chosen_and_is_a_negative_of_its_own():
    # s0: right answer through a wrong step (the "38/3 = 19" case), the most confident; s1 sound
    s = [sample("p", 0, -0.1, "38/3 = 19. 19+8 = 27. The answer is 27."), sample("p", 1, -0.6, "sound"),
         sample("p", 2, -0.3, "wrong")]
    v = [verdict("p", 0, True, 0.3, first_error_step=0), verdict("p", 1, True, 0.0),
         verdict("p", 2, False, 0.5)]
    pairs, stats = build([problem("p")], s, v, PairsConfig(), "weighted", no_sim)
    assert {p.chosen_index for p in pairs} == {1} and all(p.chosen_sound for p in pairs)
    assert sorted((p.rejected_index, p.rejected_kind) for p in pairs) == [(0, "unsound"), (2, "incorrect")]
    assert (stats["samples_sound"], stats["samples_unsound"], stats["samples_incorrect"]) == (1, 1, 1)
    assert (stats["pairs_rejected_unsound"], stats["pairs_rejected_incorrect"]) == (1, 1)
    # switched off as negatives: only the incorrect one is paired, the unsound one is still never chosen
    off, _ = build([problem("p")], s, v, PairsConfig(negatives=["incorrect"]), "weighted", no_sim)
    assert [(p.chosen_index, p.rejected_index) for p in off] == [(1, 2)]
    # the first behaviour (answer only) is a named choice: then the unsound sample can be chosen
    old, stats = build([problem("p")], s, v, PairsConfig(soundness="answer_only"), "weighted", no_sim)
    assert {p.chosen_index for p in old} == {1} and [p.rejected_index for p in old] == [2]
    lucky_only = [sample("p", 0, -0.1, "lucky"), sample("p", 2, -0.3, "wrong")]
    v2 = [verdict("p", 0, True, 0.3, first_error_step=0), verdict("p", 2, False, 0.5)]
    old, stats = build([problem("p")], lucky_only, v2, PairsConfig(soundness="answer_only"), "weighted", no_sim)
    assert [p.chosen_index for p in old] == [0] and not old[0].chosen_sound and stats["share_chosen_sound"] == 0.0
    new, stats = build([problem("p")], lucky_only, v2, PairsConfig(), "weighted", no_sim)
    assert {p.chosen_index for p in new} == {None} and stats["problems_reference_chosen"] == 1


def test_soundness_by_wrongness_threshold():
    s = [sample("p", 0, -0.1), sample("p", 1, -0.2), sample("p", 2, -0.3)]
    v = [verdict("p", 0, True, 0.04, first_error_step=1), verdict("p", 1, True, 0.2), verdict("p", 2, False, 0.5)]
    pairs, stats = build([problem("p")], s, v, PairsConfig(soundness="wrongness", sound_max_wrongness=0.05),
                         "weighted", no_sim)
    assert {p.chosen_index for p in pairs} == {0} and stats["samples_unsound"] == 1


# ---------------------------------------------------------------- degenerate samples


def test_truncated_and_looping_samples_are_never_chosen_nor_hard_negatives_by_default():
    # the degenerate ones are the most confident and most similar: they would win on hardness
    s = [sample("p", 0, -0.5, "sound"), sample("p", 1, -0.05, "cut", finish="length"),
         sample("p", 2, -0.05, "loop"), sample("p", 3, -0.4, "near miss"),
         sample("p", 4, -0.01, "cut but right", finish="length")]
    v = [verdict("p", 0, True), verdict("p", 1, False, 0.6, 0.9, degenerate="truncated"),
         verdict("p", 2, False, 0.6, 0.9, degenerate="looping"), verdict("p", 3, False, 0.3, 0.0),
         verdict("p", 4, False, 0.6, 0.5, degenerate="truncated")]
    sim = table_similarity({("cut", "sound"): 0.95, ("loop", "sound"): 0.9, ("near miss", "sound"): 0.8})
    pairs, stats = build([problem("p")], s, v, PairsConfig(per_problem=1), "weighted", sim)
    assert [(p.chosen_index, p.rejected_index) for p in pairs] == [(0, 3)]
    assert stats["samples_degenerate"] == 3 and stats["samples_degenerate_truncated"] == 2
    assert stats["samples_degenerate_looping"] == 1
    # an optional kind of negative: counted, and never the chosen one
    cfg = PairsConfig(per_problem=4, negatives=["incorrect", "unsound", "degenerate"])
    pairs, stats = build([problem("p")], s, v, cfg, "weighted", sim)
    assert {p.chosen_index for p in pairs} == {0} and stats["pairs_rejected_degenerate"] == 3
    # a problem whose only "correct-looking" sample is degenerate falls back to the reference
    only = [sample("q", 0, -0.1, "cut", finish="length"), sample("q", 1, -0.3, "wrong")]
    vq = [verdict("q", 0, False, 0.5, degenerate="truncated"), verdict("q", 1, False, 0.5)]
    pairs, _ = build([problem("q")], only, vq, PairsConfig(), "weighted", no_sim)
    assert [(p.chosen_index, p.rejected_index) for p in pairs] == [(None, 1)]


def test_chosen_tie_on_wrongness_goes_to_the_most_confident():
    s = [sample("p", 0, -0.9), sample("p", 1, -0.3), sample("p", 2, -0.5)]
    v = [verdict("p", 0, True, 0.1), verdict("p", 1, True, 0.1), verdict("p", 2, False, 0.7)]
    pairs, _ = build([problem("p")], s, v, PairsConfig(), "weighted", no_sim)
    assert pairs[0].chosen_index == 1 and pairs[0].confidence_chosen == pytest.approx(c(-0.3))


def test_identical_incorrect_texts_are_deduplicated():
    s = [sample("p", 0, -0.1, "right"), sample("p", 1, -0.2, "wrong A"), sample("p", 2, -0.2, " wrong A\n"),
         sample("p", 3, -0.4, "wrong B")]
    v = [verdict("p", 0, True), verdict("p", 1, False, 0.5), verdict("p", 2, False, 0.5),
         verdict("p", 3, False, 0.5)]
    for strategy in ("weighted", "uniform", "random", "random_rejected"):
        pairs, stats = build([problem("p")], s, v, PairsConfig(per_problem=3), strategy, no_sim)
        assert sorted(p.rejected_index for p in pairs) == [1, 3], strategy
        assert stats["duplicates_removed"] == 1


def test_skips_are_counted_by_cause():
    probs = [problem("mixed"), problem("allc"), problem("alli", solution=None), problem("none"),
             problem("errs")]
    s = [sample("mixed", 0, -0.1), sample("mixed", 1, -0.2), sample("allc", 0, -0.1), sample("allc", 1, -0.1),
         sample("alli", 0, -0.1), sample("alli", 1, -0.3), sample("errs", 0, -0.1), sample("errs", 1, -0.1)]
    v = [verdict("mixed", 0, True), verdict("mixed", 1, False, 0.6), verdict("allc", 0, True),
         verdict("allc", 1, True), verdict("alli", 0, False, 0.6), verdict("alli", 1, False, 0.6),
         verdict("errs", 0, False, 1.0, status="error"), verdict("errs", 1, False, 1.0, status="timeout"),
         verdict("ghost", 0, True)]
    pairs, stats = build(probs, s, v, PairsConfig(), "weighted", no_sim)
    assert [p.problem_id for p in pairs] == ["mixed"]
    assert stats["skipped_no_negatives"] == 1
    assert stats["skipped_no_sound_sample"] == 1 and stats["problems_without_sound_sample"] == 1  # no reference
    assert stats["skipped_no_samples"] == 1 and stats["skipped_no_verdicts"] == 1
    assert stats["samples_unverified"] == 2 and stats["verdicts_without_sample"] == 1
    # a single pair whose ratio is 1 -> weight (1 - 0.3) + 0.3 * 1 = 1
    assert pairs[0].weight == pytest.approx(1.0)


def test_unparsed_counts_as_incorrect_and_missing_verdicts_are_counted():
    s = [sample("p", 0, -0.1), sample("p", 1, -0.2), sample("p", 2, -0.3)]
    v = [verdict("p", 0, True), verdict("p", 1, False, 1.0, status="unparsed")]
    pairs, stats = build([problem("p")], s, v, PairsConfig(), "weighted", no_sim)
    assert [p.rejected_index for p in pairs] == [1] and stats["samples_missing_verdict"] == 1


def test_reference_is_chosen_with_the_models_own_logprob():
    s = [sample("p", 0, -0.2), sample("p", 1, -1.0)]
    v = [verdict("p", 0, False, 0.8), verdict("p", 1, False, 0.4)]
    sim = table_similarity({("p-s0", "REF"): 0.6, ("p-s1", "REF"): 0.3})
    cfg = PairsConfig(per_problem=1)
    pairs, stats = build([problem("p", solution="REF")], s, v, cfg, "weighted", sim, references={"p": -0.35})
    (p,) = pairs
    assert (p.chosen, p.chosen_index, p.rejected_index) == ("REF", None, 0)
    assert p.confidence_chosen == pytest.approx(c(-0.35)) and p.confidence_chosen_source == "model"
    assert p.logprob_gap == pytest.approx(-0.2 + 0.35) and p.similarity == pytest.approx(0.6)
    assert stats["problems_reference_chosen"] == 1 and stats["share_reference_chosen"] == 1.0
    assert stats["reference_confidence_unknown"] == 0
    # without the sample stage's scores: the mean confidence of the samples, said so
    (p,), stats = build([problem("p", solution="REF")], s, v, cfg, "weighted", sim)
    assert p.confidence_chosen == pytest.approx((c(-0.2) + c(-1.0)) / 2) and p.confidence_chosen_source == "mean"
    assert stats["reference_confidence_unknown"] == 1
    off, stats = build([problem("p", solution="REF")], s, v, PairsConfig(fallback_to_reference=False),
                       "weighted", sim)
    assert off == [] and stats["skipped_no_sound_sample"] == 1


def test_nonfinite_logprobs_get_the_least_confident_finite_value_and_are_counted():
    s = [sample("p", 0, -0.5), sample("p", 1, float("nan")), sample("p", 2, float("-inf")),
         sample("p", 3, -2.0), sample("q", 0, float("nan")), sample("q", 1, float("inf"))]
    v = [verdict("p", 0, True), verdict("p", 1, False, 0.5), verdict("p", 2, False, 0.5),
         verdict("p", 3, False, 0.5), verdict("q", 0, True), verdict("q", 1, False, 0.5)]
    cfg = PairsConfig(per_problem=3, fallback_logprob_mean=-3.0)
    pairs, stats = build([problem("p"), problem("q")], s, v, cfg, "weighted", no_sim)
    assert stats["nonfinite_logprobs"] == 4
    assert all(math.isfinite(x) for p in pairs for x in (p.weight, p.weight_raw, p.hardness, p.perplexity,
                                                         p.confidence_rejected, p.confidence_chosen))
    by = {(p.problem_id, p.rejected_index): p for p in pairs}
    assert by[("p", 1)].confidence_rejected == pytest.approx(c(-2.0))
    assert by[("p", 2)].perplexity == pytest.approx(c(2.0))
    assert by[("q", 1)].confidence_rejected == pytest.approx(c(-3.0))
    assert by[("q", 1)].confidence_chosen == pytest.approx(c(-3.0))


def _many():
    probs = [problem(f"p{i}") for i in range(8)]
    # three sound correct samples (0..2, chosen by the verifier: index 0, lowest wrongness) and four incorrect
    s = [sample(f"p{i}", j, -0.1 * j) for i in range(8) for j in range(7)]
    v = [verdict(f"p{i}", j, j < 3, 0.05 * j if j < 3 else 0.5) for i in range(8) for j in range(7)]
    return probs, s, v


def test_random_is_random_on_both_sides_and_seeded_per_problem():
    probs, s, v = _many()
    cfg = PairsConfig(per_problem=2, seed=3)

    def picks(ps, ss, vs, cfg, strategy="random"):
        pairs, _ = build(ps, ss, vs, cfg, strategy, no_sim)
        return sorted((p.problem_id, p.chosen_index, p.rejected_index) for p in pairs)

    first = picks(probs, s, v, cfg)
    assert len(first) == 16 and all(r >= 3 for _, _, r in first)
    assert picks(probs[::-1], s[::-1], v[::-1], cfg) == first
    assert picks(probs[:3], [x for x in s if x.problem_id in {"p0", "p1", "p2"}], v, cfg) == first[:6]
    assert picks(probs, s, v, PairsConfig(per_problem=2, seed=4)) != first
    # the chosen side is drawn too (the paper's random-pair baseline), not the verifier's lowest wrongness
    assert {ch for _, ch, _ in first} != {0}
    assert {r for _, _, r in first} != {3, 4}  # the hardness order would take the most confident negatives
    # random_rejected keeps the verifier's chosen response and draws only the rejected
    kept = picks(probs, s, v, cfg, "random_rejected")
    assert {ch for _, ch, _ in kept} == {0}
    pairs, _ = build(probs, s, v, cfg, "random", no_sim)
    assert all(p.weight == 1.0 and p.strategy == "random" for p in pairs)


def test_midranks_and_spearman():
    assert midranks([3.0, 1.0, 2.0]) == pytest.approx([5 / 6, 1 / 6, 3 / 6])
    assert midranks([1.0, 1.0, 5.0]) == pytest.approx([1 / 3, 1 / 3, 5 / 6])
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    shares = variance_shares([(1.0, 0.0, 0.0), (2.0, 0.0, 1.0), (3.0, 0.0, 2.0)])
    assert shares["gap"] == pytest.approx(0.0) and shares["wrongness"] == pytest.approx(0.5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="strategy 'best'"):
        build(P1, S1, V1, PairsConfig(), "best", SIM1)
    with pytest.raises(ValueError, match="problem_id='zz'"):
        build(P1, [*S1, sample("zz", 0, -0.1)], V1, PairsConfig(), "weighted", SIM1)


# ---------------------------------------------------------------- the stage shell


def write_inputs(tmp_path, problems, samples, verdicts):
    sample_dir, verify_dir, data_dir = tmp_path / "sample", tmp_path / "verify", tmp_path / "data"
    write_jsonl(sample_dir / "prompts.jsonl", [{"problem_id": k, "prompt": v} for k, v in prompts_of(problems).items()])
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
    # s4's lp becomes the least confident finite lp, -1.2: h4 = 0.3012 + 0.5 + 0.25 = 1.0512 > h3 = 0.5512
    assert [(p.chosen_index, p.rejected_index) for p in pairs] == [(1, 2), (1, 4)]
    assert pairs[1].hardness == pytest.approx(c(-1.2) + 0.5 + 0.25)
    assert pairs[0].prompt == "question of p1\nINSTRUCTION"
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
    assert "1 problems had no negative of the kinds ['incorrect', 'unsound']" in msg
    assert "1 no sound correct sample and no usable reference" in msg
    assert "1 had no samples" in msg
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


@pytest.fixture
def tiny_cfg():
    from conf import load_config

    return load_config(Path(__file__).resolve().parents[2] / "conf" / "tiny.yaml")


def test_prefetch_gets_each_chunk_of_texts_once_and_changes_no_pair(monkeypatch):
    import tasks.pairing.pairs as pairs_mod

    monkeypatch.setattr(pairs_mod, "PREFETCH_PROBLEMS", 2)
    problems = [problem(f"p{i}") for i in range(5)]
    samples = [sample(f"p{i}", j, -0.1 * (j + 1), text=f"p{i} text {j}") for i in range(5) for j in range(3)]
    verdicts = [verdict(f"p{i}", j, correct=j == 0, wrongness=0.2 * j) for i in range(5) for j in range(3)]
    asked: list[tuple[str, str]] = []

    def sim(a: str, b: str) -> float:
        asked.append((a, b))
        return len(a) / (len(a) + len(b))

    batches: list[list[str]] = []
    with_prefetch, _ = build(problems, samples, verdicts, PairsConfig(), "weighted", sim, prefetch=batches.append)
    without, _ = build(problems, samples, verdicts, PairsConfig(), "weighted", sim)
    assert [p.model_dump() for p in with_prefetch] == [p.model_dump() for p in without]
    assert len(batches) == 3  # 5 problems in chunks of 2
    assert batches[0][0] == problems[0].solution and "p1 text 2" in batches[0] and "p2 text 0" not in batches[0]
    prefetched = {t for b in batches for t in b}
    assert all(a in prefetched and b in prefetched for a, b in asked)  # every similarity asked was prefetched
