"""The verifier's output record: one ``Verdict`` per scored solution.

``tasks.records`` re-exports this class, so stages and graders share one schema. Example::

    {"problem_id": "gsm8k_train-0", "index": 3,
     "dims": {"semantic_alignment": 0.12, "structural_integrity": 0.0, "step_ordering": 0.0,
              "logical_consistency": 1.0, "symbolic_validity": 0.75, "answer_correctness": 1.0},
     "wrongness": 0.66, "absurdity": 0.31, "correct": false, "first_error_step": 1,
     "steps": ["Natalia sold 48/2 = 24 clips in May.", "She sold 48+24 = 70 clips.", "#### 70"],
     "status": "ok", "notes": ["step 1: 48+24 = 70 is wrong (lhs = 72)"]}

``dims`` are the six error dimensions, each in [0, 1] where 1 means fully erroneous. ``degenerate``
names why a solution is not a complete one (``truncated``: cut at the token limit, ``looping``: it
repeats itself, ``no_answer``: no stated final answer; see :mod:`verifier.degenerate`), or is null.
A degenerate solution is never ``correct``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DIMENSIONS = (
    "semantic_alignment",
    "structural_integrity",
    "step_ordering",
    "logical_consistency",
    "symbolic_validity",
    "answer_correctness",
)

Status = Literal["ok", "unparsed", "timeout", "error"]
Degenerate = Literal["truncated", "looping", "no_answer"]


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem_id: str = ""
    index: int = 0
    dims: dict[str, float]
    wrongness: float
    absurdity: float
    correct: bool
    first_error_step: int | None = None
    steps: list[str] = Field(default_factory=list)
    status: Status = "ok"
    notes: list[str] = Field(default_factory=list)
    degenerate: Degenerate | None = None
