"""Entrypoint for subprocess tests (worker runs, ``prefect flow-run retry``): the real flows on fake stages.

    prefect flow-run retry <id> --entrypoint tests/flows/fake_pipeline.py:hnsdpo
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orch_fakes  # noqa: E402

from tasks.orchestration import stages  # noqa: E402

stages.STAGE_FUNCTIONS.update(orch_fakes.FAKES)

from flows.pipeline import hnsdpo, reevaluate  # noqa: E402

__all__ = ["hnsdpo", "reevaluate"]
