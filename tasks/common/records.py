"""Record schemas that flow between stages, one per artifact kind, plus the JSONL reader and writer.

The verifier owns the ``Verdict`` schema and its ``DIMENSIONS`` (``verifier.verdict``).

A ``Sample`` as written by the sample stage::

    {"problem_id": "gsm8k_train-17", "index": 3, "text": "...#### 18", "n_tokens": 74,
     "logprob_sum": -21.3, "logprob_mean": -0.288, "finish_reason": "stop"}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conf.schema import NegativeKind, Strategy


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


def jsonl_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line of a JSONL file (``.jsonl.gz`` read through gzip)."""
    path = Path(path)
    opener: Any = open
    if path.suffix == ".gz":
        import gzip

        opener = gzip.open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                yield line_no, line


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """The rows of a JSONL file (blank lines skipped): the project's one JSONL reader."""
    for _, line in jsonl_lines(path):
        yield json.loads(line)


def read_records(path: str | Path, cls: type[R], *, error: type[Exception] = ValueError, limit: int | None = None,
                 prepare: Callable[[Any], Any] | None = None) -> list[R]:
    """The first ``limit`` rows of a JSONL file as ``cls``; a row that does not validate raises ``error``
    ("<path>: line <n> is not a valid <cls>: ..."; ``n`` counts rows). ``prepare(row)`` may adjust a row
    before validation (e.g. null scores read as NaN)."""
    out: list[R] = []
    for n, row in enumerate(iter_jsonl(path), start=1):
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(cls.model_validate(prepare(row) if prepare else row))
        except ValidationError as e:
            raise error(f"{path}: line {n} is not a valid {cls.__name__}: {e}") from None
    return out
