"""Record schemas that flow between stages, one per artifact kind, plus JSONL helpers.

A ``Sample`` as written by the sample stage::

    {"problem_id": "gsm8k_train-17", "index": 3, "text": "...#### 18", "n_tokens": 74,
     "logprob_sum": -21.3, "logprob_mean": -0.288, "finish_reason": "stop"}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from conf.schema import NegativeKind, Strategy
from verifier.verdict import DIMENSIONS as DIMENSIONS  # one definition, owned by the verifier


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Record):
    id: str
    question: str
    answer: str = Field(description="Gold final answer, as written in the source.")
    solution: str | None = Field(None, description="Reference chain-of-thought, when the source has one.")
    source: str
    split: str
    meta: dict[str, Any] = Field(default_factory=dict, description="e.g. level, subject, n_steps.")


class Sample(Record):
    problem_id: str
    index: int
    text: str
    n_tokens: int
    logprob_sum: float
    logprob_mean: float
    finish_reason: str


# The verifier owns this schema; the redundant alias marks an explicit re-export (ruff keeps it).
from verifier.verdict import Verdict as Verdict  # noqa: E402


class Pair(Record):
    problem_id: str
    prompt: str = Field(description="The exact user turn sampling used (training.prompts.user_turn).")
    chosen: str
    rejected: str
    weight: float
    strategy: Strategy
    chosen_index: int | None = Field(None, description="Sample index; None = reference solution.")
    rejected_index: int
    rejected_kind: NegativeKind = Field("incorrect", description="incorrect | unsound | degenerate")
    chosen_sound: bool = Field(True, description="The verifier finds no erroneous step in the chosen (a "
                               "reference counts as sound).")
    confidence_chosen: float
    confidence_rejected: float
    confidence_chosen_source: Literal["sample", "model", "mean"] = Field(
        "sample", description="sample: the chosen's own sampling log-prob; model: the model's log-prob of "
        "the reference (teacher forcing); mean: unknown, the mean of the problem's samples.")
    similarity: float
    wrongness: float
    process_wrongness: float = Field(0.0, description="wrongness of the rejected without answer_correctness")
    absurdity: float
    perplexity: float
    logprob_gap: float = Field(0.0, description="lp_rejected - lp_chosen (mean token log-probs)")
    hardness: float
    weight_raw: float
    clipped: bool = False


R = TypeVar("R", bound=BaseModel)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader accepts the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def write_jsonl(path: str | Path, rows: Iterable[BaseModel | dict]) -> int:
    """Write rows (records or dicts) as JSONL, atomically; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            d = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
            f.write(json.dumps(_clean(d), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_records(path: str | Path, cls: type[R]) -> list[R]:
    return [cls.model_validate(d) for d in iter_jsonl(path)]
