"""The ablation report's typed rows: what ``ablation.json`` holds, read and written as pydantic models.

:func:`tasks.analysis.ablation.build_ablation_report` returns an :class:`AblationReport`; the renderer,
the plot and the flat metrics read its fields; ``ablation.json`` is ``report.model_dump(mode="json")``
and :meth:`AblationReport.model_validate` reads it back (``publish``). One :class:`ArmRow`::

    {"arm": "weighted-0.3", "strategy": "weighted", "lam": 0.3, "seeds": [0, 1, 2],
     "per_seed": [0.412, 0.398, 0.42], "accuracy": 0.41, "seed_low": 0.382, "seed_high": 0.438,
     "problem_low": 0.372, "problem_high": 0.449, "n": 500}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Row(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ArmRow(Row):
    """Accuracy of one arm (or SFT): mean over seeds, t interval over seeds, bootstrap over problems."""

    arm: str
    strategy: str | None = None
    lam: float | None = None
    seeds: list[int]
    per_seed: list[float]
    accuracy: float | None
    seed_low: float | None = None
    seed_high: float | None = None
    problem_low: float | None = None
    problem_high: float | None = None
    n: int


class Comparison(Row):
    """``arm`` − ``vs``: Δ accuracy with its intervals, seeds won/lost, McNemar pooled and per seed."""

    arm: str
    vs: str
    seeds: list[int]
    diff: float
    diff_low: float | None
    diff_high: float | None
    seed_diffs: list[float]
    seed_low: float | None
    seed_high: float | None
    wins: int
    losses: int
    b: int
    c: int
    p_value: float
    p_per_seed: list[float]
    mde: float | None = None  # paired minimal detectable effect (the report's alpha and power) on these problems
    same_pairs: float | None = None  # vs the uniform arm: the share of pairs the two arms share (1 = weights only)
    reading: str


class GroupRow(Row):
    """Accuracy per model on one group of problems (``group``: the number of steps, None = unknown)."""

    group: Any = None
    n: int
    accuracy: dict[str, float | None]


class ErrorGroupRow(Row):
    """Accuracy per model on the problems where the SFT model's ``axis`` was ``kind``."""

    axis: str  # answer | error | known | known_type
    kind: str
    n: int
    accuracy: dict[str, float | None]


class Correlation(Row):
    pearson: float | None
    spearman: float | None
    n: int


class WeightSummary(Row):
    """An arm's pair weights: distribution, clipping, degeneracy, correlations with the pair features."""

    arm: str
    n_pairs: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    q10: float | None = None
    median: float | None = None
    q90: float | None = None
    max: float | None = None
    clipped_share: float | None = None
    constant: bool = True
    degenerate: bool | None = None
    correlations: dict[str, Correlation] = {}
    weights: list[float] = []
    reference_chosen_share: float | None = None  # pairs whose chosen is the reference (chosen_index None)
    unsound_negative_share: float | None = None  # pairs whose rejected has the right answer, unsound steps
    mean_similarity: float | None = None  # of the rejected to the chosen (hard vs random negatives)


class ErrorTypeRow(Row):
    """The SFT model's wrong outputs of one generator-known type, and how the verifier split them."""

    kind: str
    n: int
    share: float
    verifier_arithmetic: int
    verifier_structural: int


class ErrorTypes(Row):
    n_wrong: int
    rows: list[ErrorTypeRow]
    structural_share: float  # known: every trap type and other_structural (synthetic.STRUCTURAL_KINDS)
    verifier_structural_share: float  # wrong without a wrong calculation found (error_kind)


class VerifierCheck(Row):
    """The verifier's arithmetic flag against the known slips (SFT's wrong outputs), and its correctness
    against the grader's."""

    n_wrong: int
    tp: int
    fp: int
    fn: int
    tn: int
    agreement: float | None
    precision: float | None
    recall: float | None
    known_arithmetic_share: float | None
    correct_agreement: float | None
    n_judged: int


class Reading(Row):
    verdict: str
    holds: bool
    sentences: list[str]
    diagnostics: list[str]


class SoundSection(Row):
    arms: list[ArmRow]
    comparisons: list[Comparison]
    method: str | None = None


class PoolSummary(Row):
    """The sampled pool the pairs were built from (the verify stage's verdicts): what item 3 of a testbed needs."""

    problems: int
    samples: int
    k_min: int
    k_max: int
    correct_share: float  # of all samples
    sound_correct_share: float  # right answer and no erroneous step found
    mixed: int  # problems with some samples right and some wrong
    all_correct: int
    all_wrong: int

    @property
    def mixed_share(self) -> float:
        return self.mixed / self.problems if self.problems else 0.0


class DisplacementRow(Row):
    """An arm's DPO likelihood-displacement metrics, mean over its seeds (``tasks.evaluation.report``)."""

    model_config = ConfigDict(extra="allow")  # every DISPLACEMENT_KEYS metric

    arm: str
    seeds: int
    logps_chosen_before: float
    logps_chosen_after: float
    logps_chosen_delta: float
    logps_rejected_delta: float
    share_chosen_logp_fell: float


class AblationReport(Row):
    n_problems: int
    level: float
    bootstrap_samples: int
    seed: int
    alpha: float
    power: float = 0.8  # of every comparison's minimal detectable effect
    primary: str
    random_arm: str | None
    arms: list[ArmRow]
    comparisons: list[Comparison]
    by_steps: list[GroupRow]
    by_sft_error: list[ErrorGroupRow]
    weights: list[WeightSummary]
    verifier_check: VerifierCheck | None = None
    error_types: ErrorTypes | None = None
    commit: str | None = None
    reading: Reading | None = None
    sound: SoundSection | None = None
    displacement: list[DisplacementRow] = []
    pool: PoolSummary | None = None
    dataset: str | None = None
    command: str | None = None
    profile: str | None = None

    def comparison(self, arm: str, vs: str | None) -> Comparison | None:
        return next((c for c in self.comparisons if c.arm == arm and c.vs == vs), None)

    def arm_names(self) -> list[str]:
        return [r.arm for r in self.arms]
