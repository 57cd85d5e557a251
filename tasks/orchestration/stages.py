"""The stage interface: one function per stage, all with one signature.

Every stage module ``tasks/<stage>.py`` has ``run(cfg, inputs, out, callbacks=())``: ``inputs`` maps the
node's roles to the upstream stage folders (``{"sample": Path, "data": Path}``; the report stage gets
``{label: evaluate folder}``), ``out`` is the work folder the stage writes into, ``callbacks`` are
``transformers`` trainer callbacks (progress and MLflow step metrics; only the training stages take them),
and it returns the stage's metrics. A DPO branch's strategy reaches the pairs stage as
``cfg.pairs.strategy`` (:func:`tasks.orchestration.plan.node_config`).

The stage modules are imported here directly: none of them imports torch at import time (the training
and generation stages import it inside ``run``), so ``hnsdpo plan`` and the flows start without it.
A stage's ``VERSION`` (part of every key) is the constant of the module that defines its function.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from conf import Config
from tasks import base, data, dpo, evaluate, pairs, report, sample, sft, verify


class StageFn(Protocol):
    def __call__(self, cfg: Config, inputs: Mapping[str, Path], out: Path,
                 callbacks: Sequence[Any] = ()) -> Mapping[str, Any] | None: ...


STAGE_FUNCTIONS: dict[str, StageFn] = {
    "data": data.run,
    "base": base.run,
    "sft": sft.run,
    "sample": sample.run,
    "verify": verify.run,
    "pairs": pairs.run,
    "dpo": dpo.run,
    "evaluate": evaluate.run,
    "report": report.run,
}
DEFAULT_VERSION = "1"
# Stages that checkpoint: their work folder survives a failure and the next attempt resumes from it.
RESUMABLE = frozenset({"base", "sft", "sample", "dpo"})
# Stages that get Prefect retries: I/O-bound only (training resumes from checkpoints instead), and
# only for errors that are not deterministic (retry_unless_deterministic).
IO_BOUND = frozenset({"data"})
# Stages built on a transformers Trainer: they get callbacks (progress, MLflow step metrics).
TRAINER_STAGES = frozenset({"sft", "dpo"})


def stage_function(stage: str) -> StageFn:
    try:
        return STAGE_FUNCTIONS[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_FUNCTIONS)}") from None


def stage_version(stage: str) -> str:
    """``VERSION`` of the module that defines the stage's function ("1" when it defines none)."""
    module = sys.modules[stage_function(stage).__module__]
    return str(getattr(module, "VERSION", DEFAULT_VERSION))
