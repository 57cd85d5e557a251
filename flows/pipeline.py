"""Prefect flows: ``hnsdpo`` (the whole DAG) and ``reevaluate`` (the latest registered DPO adapter).

They only wire tasks: the plan comes from ``tasks.orchestration.dag.pipeline``, every stage is the cached
``tasks.orchestration.runner.stage_task``, tracking is ``tasks.orchestration.tracking.Tracker``, opened and ended by :func:`tracked`. Parameters are typed, so Prefect
validates them with pydantic and the UI shows a form::

    hnsdpo(profile="conf/tiny.yaml", overrides=["dpo.beta=0.2"], until="dpo")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from conf import Config, load_config
from tasks.orchestration import plan as dag
from tasks.orchestration import runner, tracking

StageName = Literal["data", "base", "sft", "sample", "verify", "pairs", "dpo", "evaluate", "report"]


@task(name="load-profile", cache_policy=NO_CACHE)
def load_profile(profile: str, overrides: list[str] | None = None) -> Config:
    return load_config(profile, overrides or [])


def open_tracker(cfg: Config, flow_name: str, profile: str, overrides: list[str] | None) -> Any:
    """The flow run's MLflow parent run (checks the server first), or None when tracking is off."""
    if not cfg.tracking.enabled:
        return None
    return tracking.Tracker(cfg, f"{flow_name}-{flow_run.get_name() or 'local'}", profile, overrides or [],
                            {"prefect_flow_run_id": str(flow_run.get_id() or "")})


@contextmanager
def tracked(cfg: Config, flow_name: str, profile: str, overrides: list[str] | None) -> Iterator[Any]:
    """The flow run's tracker (:func:`open_tracker`, None when tracking is off), ended when the block ends:
    FINISHED, FAILED, or KILLED when the block raised an interrupt (SIGINT → KeyboardInterrupt, SIGTERM →
    Prefect's TerminationSignal); the exception propagates. The parent run and any open stage run end.
    Prefect itself marks the flow run Crashed (interrupt) or Cancelled (a cancellation)."""
    tracker = open_tracker(cfg, flow_name, profile, overrides)
    try:
        yield tracker
    except BaseException as e:
        if tracker is not None:
            tracker.end_with(e)
        raise
    if tracker is not None:
        tracker.end_with(None)


@flow(name="hnsdpo")
def hnsdpo(profile: str = "conf/tiny.yaml", overrides: list[str] | None = None,
           until: StageName | None = None) -> dict[str, Any]:
    """Run the DAG (data → … → evaluate → report) for ``profile`` with ``overrides``, up to ``until``."""
    cfg = load_profile(profile, overrides)
    with tracked(cfg, "hnsdpo", profile, overrides) as tracker:
        results = runner.run_nodes(cfg, dag.pipeline(cfg, until), tracker)
    return runner.summarize(cfg, results, tracker)


@flow(name="reevaluate")
def reevaluate(profile: str = "conf/tiny.yaml", overrides: list[str] | None = None,
               model_name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Evaluate the latest (or ``version``) registered DPO adapter on the profile's ``data.eval`` sets."""
    cfg = load_profile(profile, overrides)
    with tracked(cfg, "reevaluate", profile, overrides) as tracker:
        model = task(tracking.latest_model_version, name="registry-latest", cache_policy=NO_CACHE)(cfg, model_name, version)
        manifest = task(tracking.restore_stage, name="registry-restore", cache_policy=NO_CACHE)(cfg, model)
        nodes = dag.reevaluation_nodes(cfg, model.version)
        done = {"registered": runner.NodeResult(dag.Node("registered", manifest.stage), manifest, True)}
        results = runner.run_nodes(cfg, nodes, tracker, done)
    return runner.summarize(cfg, results, tracker)
