"""Orchestration fixtures: fake stages, a tmp artifacts root, one Prefect test API per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

PROFILE = HERE.parents[1] / "conf" / "tiny.yaml"


@pytest.fixture
def fake_stages(monkeypatch):
    """Point the runner at the cheap fakes in ``orch_fakes``."""
    import orch_fakes

    from tasks.orchestration import stages

    monkeypatch.setattr(stages, "STAGE_FUNCTIONS", dict(orch_fakes.FAKES))
    return orch_fakes


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def base_overrides(root) -> list[str]:
    return [f"orchestration.artifacts_root={root}", "orchestration.strategies=[weighted, random]",
            "orchestration.retry_delay_s=0"]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A throw-away Prefect API (sqlite in a tmp PREFECT_HOME), stopped at the end of the session."""
    import os

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
