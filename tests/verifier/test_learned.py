"""The learned step scorer channel: feature spec, model file checks, fallback and the first-error rule."""

from __future__ import annotations

import json

import pytest

from conf.schema import VerifyConfig
from verifier import VERIFIER_VERSION, MathVerifier
from verifier.learned import (
    DEFAULT_MODEL,
    DENSE,
    FEATURE_VERSION,
    N_HASH,
    StepScorer,
    hashed_indices,
    load_scorer,
    mentions_gold,
    step_features,
)

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in all?"
GOOD = "She sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips in all.\n#### 72"


def _model(tmp_path, **dense_weights) -> str:
    coef = [dense_weights.get(n, 0.0) for n in DENSE]
    d = {"version": "test", "feature_spec": {"feature_version": FEATURE_VERSION, "dense": list(DENSE), "n_hash": N_HASH},
         "mean": [0.0] * len(DENSE), "scale": [1.0] * len(DENSE), "dense_coef": coef, "hash_coef": [0.0] * N_HASH,
         "intercept": -5.0, "threshold": 0.5}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(d))
    return str(path)


def test_hashing_is_stable_and_bounded():
    a = hashed_indices("Wait, 3 + 4 = 8? I made a mistake.")
    assert a == hashed_indices("Wait, 3 + 4 = 8? I made a mistake.")
    assert a and all(0 <= i < N_HASH for i in a) and a == sorted(set(a))


# (gold, step, whether the step writes the gold value): as a whole value only, in any of its usual spellings
MENTIONS = [
    ("12", "We get $x = 12$.", True), ("12", "so 12 apples", True), ("12", "so 120 apples", False),
    ("12", "$x_{12}$ is next", False), ("12", "12.5 of them", False), ("12", "That makes 12.", True),
    ("-5", "x = -5", True), ("-5", "x = 5", False), ("5", "x = -5", False), ("5", "$7 - 5 = 2$", False),
    ("2", "$7 - 5 = 2$", True), ("5", r"$\boxed{5}$", True), ("5", r"$\frac{5}{2}$", False),
    ("2", r"$\frac{5}{2}$", False), ("5", "$x^5$", False), ("5", "$5!$", False), ("5", r"$5\sqrt{2}$", False),
    (r"\sqrt{2}", r"$5\sqrt{2}$", False), (r"\sqrt{2}", r"so it is \sqrt{2}.", True),
    (r"2\sqrt{2}", r"$x = 2 \sqrt{2}$", True), (r"\frac{3}{4}", r"that is $\dfrac{3}{4}$ of it", True),
    (r"\frac{3}{4}", "0.75 of it", True), (r"\frac{3}{4}", r"$\frac{3}{4}^2$", False),
    ("1000", "1,000 dollars", True), ("1000", "1,000.5 dollars", False), ("(2,3)", "the point $(2, 3)$", True),
    ("x^2+1", "$x^2 + 1$", True), (r"\text{(C)}", r"answer \text{(C)}", True), ("", "12", False),
    ("#### 72", "72 clips", True),
]


@pytest.mark.parametrize(("gold", "step", "want"), MENTIONS)
def test_mentions_gold_as_a_whole_value(gold, step, want):
    assert mentions_gold(gold, step) is want


def test_position_buckets_one_hot_the_step_index():
    steps = [f"Step {k}: we add {k} + 1 = {k + 1}." for k in range(25)]
    feats = step_features("Add.", steps, [[] for _ in steps], [], "")
    cols = [DENSE.index(n) for n in ("pos_1", "pos_2", "pos_3_4", "pos_5_7", "pos_8_12", "pos_13_20", "pos_21_up")]
    hot = [[k for k, c in enumerate(cols) if d[c]] for d, _ in feats]
    assert hot[0] == [] and feats[0][0][DENSE.index("is_first")] == 1.0
    assert [h[0] for h in hot[1:]] == [0, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6]
    assert all(len(h) == 1 for h in hot[1:])


def test_shipped_model_trusts_a_step_that_reaches_the_gold_value():
    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped step scorer")
    v = MathVerifier(VerifyConfig(embedding_model=None))
    q = "Find the positive value of $x$ such that $x^2 = 144$."
    steps = ["We take the square root of both sides.", "So $x = 12$, since $x$ is positive."]
    on_track = v.analyze(q, steps, "12").step_probs[-1]
    assert on_track < v.analyze(q, steps, "13").step_probs[-1]
    assert on_track < v.analyze(q, steps, "").step_probs[-1]


def test_load_scorer_disabled_missing_and_invalid(tmp_path):
    assert load_scorer(None) == (None, None)
    assert load_scorer("none") == (None, None)
    s, note = load_scorer(str(tmp_path / "absent.json"))
    assert s is None and "symbolic channel only" in note
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "x", "feature_spec": {"dense": ["nope"]}}))
    s, note = load_scorer(str(bad))
    assert s is None and "unusable" in note


def test_missing_model_still_scores_and_says_so(tmp_path):
    v = MathVerifier(VerifyConfig(step_scorer=str(tmp_path / "absent.json"), embedding_model=None))
    r = v.score(Q, GOOD, "72")
    assert r.correct and r.first_error_step is None and r.status == "ok"
    assert any("symbolic channel only" in n for n in r.notes)


def test_shipped_model_matches_the_feature_spec():
    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped step scorer")
    assert DEFAULT_MODEL.stat().st_size <= 1_000_000
    s = StepScorer.load(DEFAULT_MODEL)
    assert 0 < s.threshold < 1 and s.meta.get("cv_auroc", 0) > 0.6
    v = MathVerifier(VerifyConfig(embedding_model=None))
    a = v.analyze(Q, GOOD, "72")
    assert a.step_probs is not None and len(a.step_probs) == len(a.steps)
    assert all(0 <= p <= 1 for p in a.step_probs)
    assert v.score(Q, GOOD, "72").first_error_step is None


def test_learned_rejection_sets_the_first_error(tmp_path):
    # a scorer that rejects hedging steps: the earliest rejected step is the first error
    v = MathVerifier(VerifyConfig(step_scorer=_model(tmp_path, n_hedges=20.0), embedding_model=None))
    steps = ["She sold 48/2 = 24 clips in May.", "Wait, I think I made a mistake, maybe it is 25.",
             "She sold 48+24 = 72 clips in all.", "#### 72"]
    r = v.score(Q, steps, "72")
    assert r.correct and r.first_error_step == 1
    assert any("learned step scorer rejects" in n for n in r.notes)
    # a wrong calculation before it still comes first
    steps[0] = "She sold 48/2 = 25 clips in May."
    assert v.score(Q, steps, "72").first_error_step == 0
    # the threshold in the config overrides the model file's
    v = MathVerifier(VerifyConfig(step_scorer=_model(tmp_path, n_hedges=20.0), step_threshold=1.0,
                                  embedding_model=None))
    assert v.score(Q, ["She sold 48/2 = 24 clips in May.", *steps[1:]], "72").first_error_step is None


def test_a_right_answer_needs_a_surer_rejection(tmp_path):
    # P(bad) of the hedging step = 1 / (1 + e^-(−5 + 3.95 · log(1 + 4 hedges))) ≈ 0.80: above the file's
    # threshold 0.5, below CORRECT_ANSWER_MIN_PROB
    from verifier.core import CORRECT_ANSWER_MIN_PROB

    v = MathVerifier(VerifyConfig(step_scorer=_model(tmp_path, n_hedges=3.95), embedding_model=None))
    steps = ["She sold 48/2 = 24 clips in May.", "Wait, I think I made a mistake, maybe it is 25.",
             "She sold 48+24 = 72 clips in all.", "#### 72"]
    a = v.analyze(Q, steps, "72")
    assert 0.5 < a.step_probs[1] < CORRECT_ANSWER_MIN_PROB
    assert a.correct and a.first_error_step is None
    wrong = [*steps[:2], "She sold 48+25 = 73 clips in all.", "#### 73"]
    b = v.analyze(Q, wrong, "72")
    assert not b.correct and b.first_error_step == 1, b.notes


def test_step_scores_are_the_learned_probability_and_wrong_calculations(tmp_path):
    v = MathVerifier(VerifyConfig(step_scorer=_model(tmp_path), embedding_model=None))  # P(bad) = e^-5 / (1 + e^-5)
    steps = ["She sold 48/2 = 25 clips in May.", "She sold 48+25 = 73 clips in all.", "#### 73"]
    a = v.analyze(Q, steps, "72")
    scores = a.step_scores()
    assert scores[0] == 1.0  # a calculation that does not hold keeps its severity
    assert scores[2] == pytest.approx(a.step_probs[2])  # the final answer's flags enter through the features only
    symbolic = MathVerifier(VerifyConfig(step_scorer=None, embedding_model=None)).analyze(Q, steps, "72")
    assert symbolic.step_probs is None and symbolic.step_scores()[0] == 1.0


def test_version_and_shipped_report_reach_the_verify_stage_metrics(tmp_path, monkeypatch):
    from tasks.verification import verdicts
    from verifier import report

    assert isinstance(VERIFIER_VERSION, int)
    shipped = verdicts.published_report()
    assert shipped is not None, "run `hnsdpo verifier-report --publish` for this verifier version"
    info = verdicts.verifier_info()
    assert info["verifier_version"] == VERIFIER_VERSION
    assert info["verifier_report_prm800k_step_auroc"] == shipped["prm800k"]["auroc"]
    assert set(info) >= {"verifier_report_false_first_error_math_references",
                         "verifier_report_answer_equivalence_agreement"}
    # another version's report (or none) is not this verifier's: the version alone
    other = tmp_path / f"verifier_report.v{VERIFIER_VERSION}.json"
    other.write_text(json.dumps({**shipped, "verifier": {**shipped["verifier"], "verifier_version": -1}}))
    monkeypatch.setattr(report, "PUBLISHED_DIR", tmp_path)
    assert verdicts.verifier_info() == {"verifier_version": VERIFIER_VERSION}
    other.unlink()
    assert verdicts.verifier_info() == {"verifier_version": VERIFIER_VERSION}


def test_similarity_without_embeddings_is_lexical():
    v = MathVerifier(VerifyConfig(embedding_model=None))
    assert v.similarity(GOOD, GOOD) == 1.0
    assert 0.0 <= v.similarity(GOOD, "The weather is nice today.") < 0.5


class _FakeEmbedder:
    """Stands in for the sentence-transformers model: every text gets the same unit vector."""

    error = None
    loaded = True
    available = True

    def __init__(self):
        self.calls = 0

    def embed_many(self, texts):
        import numpy as np

        self.calls += 1
        return [np.array([1.0, 0.0]) for _ in texts]

    def cosine(self, a, b):
        self.calls += 1
        return 1.0


def test_embedding_is_consulted_only_where_the_lexical_measures_see_a_mismatch():
    v = MathVerifier(VerifyConfig(step_scorer=None))
    fake = _FakeEmbedder()
    v._embedder = fake
    assert v.score(Q, GOOD, "72").dims["semantic_alignment"] == 0.0
    assert fake.calls == 0  # aligned lexically: the model is never asked
    off = "The weather in Paris is mild in spring and many people enjoy music.\n#### 72"
    lexical = MathVerifier(VerifyConfig(step_scorer=None, embedding_model=None)).score(Q, off, "72")
    r = v.score(Q, off, "72")
    assert fake.calls == 1
    assert r.dims["semantic_alignment"] <= lexical.dims["semantic_alignment"]  # cosine 1.0 clears the word mismatch
    # the batch path: lexical verdicts from the workers, embeddings in the parent
    again = v.embed_alignment([{"question": Q, "solution": off}], [lexical])
    assert fake.calls == 2 and again[0].dims["semantic_alignment"] == r.dims["semantic_alignment"]
    assert v.similarity("a b c", "d e f") == 1.0


def test_embedders_of_one_model_share_their_cache(monkeypatch, tmp_path):
    """Two Embedders of one model (e.g. the pairs stages of two ablation arms in one process) encode a
    text once between them; a prefetch encodes in one batched call."""
    import numpy as np

    from verifier import semantic

    class Model:
        def __init__(self):
            self.batches = []

        def encode(self, texts, **kw):
            self.batches.append(list(texts))
            return [np.array([float(len(t)), 1.0]) / np.hypot(len(t), 1.0) for t in texts]

    model = Model()
    (tmp_path / "model").mkdir()
    (tmp_path / "other").mkdir()
    path = str(tmp_path / "model")
    monkeypatch.setitem(semantic._LOADED, path, model)
    monkeypatch.setattr(semantic, "_CACHES", {})
    first, second = semantic.Embedder(path), semantic.Embedder(path)
    first.embed_many(["a", "bb", "ccc"], single_thread=False)
    assert model.batches == [["a", "bb", "ccc"]]
    assert second.cosine("a", "bb") == pytest.approx(first.cosine("a", "bb"))
    assert model.batches == [["a", "bb", "ccc"]]  # nothing encoded again
    monkeypatch.setitem(semantic._LOADED, str(tmp_path / "other"), model)
    other = semantic.Embedder(str(tmp_path / "other"))  # another model never sees these vectors
    other.embed_many(["a"])
    assert model.batches[-1] == ["a"]
