"""MLflow tracking: one parent run per flow run, one nested run per stage, the model registry.

Default store: ``sqlite:///<artifacts_root>/mlflow.db`` with artifacts under ``<artifacts_root>/mlruns``;
``tracking.uri`` points at a server instead. A nested stage run as it reads back::

    run_name="dpo/weighted", tags={"mlflow.parentRunId": "<parent>", "stage": "dpo", "key": "9c1e…",
    "cached": "false", "artifact_dir": "/…/artifacts/dpo/9c1e…"}, metrics={"train_loss": 0.61, …},
    artifacts: stage/manifest.json, stage/model.json, stage/adapter/…

Adapters are logged, full models (``model/``, ``merged/``) and checkpoints never are; other files only
below ``MAX_ARTIFACT_BYTES``. Every call goes through :class:`Tracker`, whose I/O runs as Prefect tasks
with ``orchestration.retries``. Training stages get :func:`step_callbacks`, a transformers callback that
logs step metrics to the stage's nested run.

The experiment carries ``mlflow.experimentKind = custom_model_development``; MLflow 3.17.2's UI opens a
new browser on the GenAI view regardless, so the printed link adds ``?workflowType=machine_learning``
(:func:`ui_url`), which opens the runs table. A cached stage's run links to the run that produced its artifacts
(tags ``produced_by_run_id``/``produced_by_run``, a note with the link) instead of uploading them again.
Runs end FINISHED, FAILED or, on SIGINT/SIGTERM, KILLED; each run records the host and PID that opened
it (``hnsdpo.host``, ``hnsdpo.pid``), so the next :class:`Tracker` of the experiment marks RUNNING runs
whose process is gone (a hard kill) as FAILED with ``hnsdpo.end_reason`` saying so
(:func:`mark_stale_runs`).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from conf import Config
from tasks.common.artifacts import MANIFEST, Manifest, retry_unless_deterministic
from tasks.common.provenance import git_commit

MAX_ARTIFACT_BYTES = 5 * 1024 * 1024
NEVER_LOGGED = ("model/", "merged/", "checkpoints/")  # full weights and resumable state stay on disk
ALWAYS_LOGGED = ("adapter/",)
MAX_PARAM_CHARS = 6000
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")
# What MLflow 3.x's UI reads to pick the experiment's view ("genai_development" = traces dashboard).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
END_REASON_TAG = "hnsdpo.end_reason"
# A RUNNING run without hnsdpo.host/pid tags (older code) counts as stale after this long.
STALE_UNTAGGED_S = 24 * 3600


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; raised before any stage runs."""


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    root = Path(cfg.orchestration.artifacts_root).expanduser().resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_location(cfg: Config) -> str | None:
    """Where a new experiment keeps its artifacts: ``<root>/mlruns`` for the local store, else the server's."""
    if cfg.tracking.uri:
        return None
    return (Path(cfg.orchestration.artifacts_root).expanduser().resolve() / "mlruns").as_uri()


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear message when a tracking server does not answer ``/health``."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - configured URI
            if r.status >= 400:
                raise TrackingUnavailable(f"MLflow tracking server {uri} answered {r.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it, fix tracking.uri, "
            "or set tracking.uri: null for the local SQLite store (-o tracking.uri=null)."
        ) from None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys; lists and scalars are leaves."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj} if prefix else {"value": obj}


def config_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params (dotted keys, JSON values for lists)."""
    out = {}
    for k, v in flatten(cfg.model_dump(mode="json")).items():
        s = v if isinstance(v, str) else json.dumps(v)
        out[k] = s[:MAX_PARAM_CHARS]
    return out


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers of a (nested) metrics dict, with keys MLflow accepts."""
    out = {}
    for k, v in flatten(dict(metrics)).items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, int | float) and math.isfinite(v):
            out[_BAD_KEY.sub("_", k)] = float(v)
    return out


def files_to_log(manifest: Manifest, cached: bool, max_bytes: int = MAX_ARTIFACT_BYTES) -> list[str]:
    """Relative paths of the stage files to log: adapters (when the stage ran) and small files."""
    chosen = [MANIFEST]
    for rel, info in sorted(manifest.files.items()):
        if rel.startswith(NEVER_LOGGED) or "/checkpoint-" in rel:
            continue
        small = (info.get("bytes") or 0) <= max_bytes
        if small or (rel.startswith(ALWAYS_LOGGED) and not cached):
            chosen.append(rel)
    return chosen


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client: Any, name: str, location: str | None) -> str:
    """The experiment's id (created when missing), tagged as a model-training experiment."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # created concurrently
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def owner_tags() -> dict[str, str]:
    """Who opened a run: this host and process (read back by :func:`mark_stale_runs`)."""
    return {"hnsdpo.host": socket.gethostname(), "hnsdpo.pid": str(os.getpid())}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def stale_reason(run: Any, now_ms: int | None = None, host: str | None = None) -> str | None:
    """Why a RUNNING run is stale (its process is gone), or None when it may still be running."""
    tags = run.data.tags
    host = host or socket.gethostname()
    pid = tags.get("hnsdpo.pid")
    if pid and pid.isdigit() and tags.get("hnsdpo.host") == host:
        if int(pid) != os.getpid() and not _pid_alive(int(pid)):
            return (f"stale: process {pid} on {host} that ran it is gone (killed hard, e.g. SIGKILL or "
                    "a power loss); marked FAILED by the next run")
        return None
    if not pid:
        now_ms = now_ms or int(time.time() * 1000)
        age = (now_ms - (run.info.start_time or now_ms)) / 1000
        if age > STALE_UNTAGGED_S:
            return (f"stale: RUNNING for {age / 3600:.0f} h without an owner process tag; "
                    "marked FAILED by the next run")
    return None  # another host's run: cannot tell


def mark_stale_runs(client: Any, experiment_id: str, marked_by: str | None = None) -> list[str]:
    """Mark the experiment's RUNNING runs whose process is gone as FAILED (tag ``hnsdpo.end_reason``).

    A nested run whose parent is stale is stale too. Returns the run ids marked.
    """
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    stale: dict[str, str] = {}
    for run in running:
        reason = stale_reason(run)
        if reason:
            stale[run.info.run_id] = reason
    for run in running:
        parent = run.data.tags.get("mlflow.parentRunId")
        if run.info.run_id not in stale and parent in stale:
            stale[run.info.run_id] = f"stale: its parent run {parent} is stale"
    for run_id, reason in stale.items():
        client.set_tag(run_id, END_REASON_TAG, reason + (f" ({marked_by})" if marked_by else ""))
        client.set_terminated(run_id, "FAILED")
    return list(stale)


def end_status(error: BaseException | None) -> str:
    """MLflow run status for how a run ended: FINISHED, KILLED (interrupt/termination) or FAILED."""
    if error is None:
        return "FINISHED"
    try:
        from prefect.exceptions import ExternalSignal
    except ImportError:  # pragma: no cover
        ExternalSignal = ()  # noqa: N806
    if isinstance(error, KeyboardInterrupt | SystemExit | ExternalSignal):
        return "KILLED"
    return "FAILED"


def end_message(error: BaseException) -> str:
    """A short description of why a run ended (``SIGTERM``, ``KeyboardInterrupt``, the error's repr)."""
    sig = getattr(error, "signal", None)
    if sig is not None:
        import signal as _signal

        try:
            return f"killed: {_signal.Signals(sig).name}"
        except ValueError:
            return f"killed: signal {sig}"
    if isinstance(error, KeyboardInterrupt):
        return "killed: SIGINT (KeyboardInterrupt)"
    return repr(error)


def terminate_now(uri: str, run_id: str, status: str, message: str | None = None) -> None:
    """End a run with a direct client call (no Prefect task: safe while the flow is being torn down)."""
    client = _client(uri)
    if message:
        client.set_tag(run_id, "error" if status == "FAILED" else END_REASON_TAG, message[:5000])
    client.set_terminated(run_id, status)


def producer_run(client: Any, experiment_id: str, stage: str, key: str) -> Any:
    """The newest finished, non-cached stage run that produced artifact ``stage/key``, or None."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.key = '{key}' and tags.stage = '{stage}' and tags.cached = 'false' "
        "and attributes.status = 'FINISHED'",
        max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _log_batch(client: Any, run_id: str, params: Mapping[str, str] | None = None,
               metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
               step: int = 0) -> None:
    from mlflow.entities import Metric, Param, RunTag

    ts = int(time.time() * 1000)
    items = ([("p", Param(k, v)) for k, v in (params or {}).items()]
             + [("m", Metric(k, v, ts, step)) for k, v in (metrics or {}).items()]
             + [("t", RunTag(k, str(v))) for k, v in (tags or {}).items()])
    for i in range(0, len(items), 100):
        chunk = items[i:i + 100]
        client.log_batch(run_id, params=[x for t, x in chunk if t == "p"],
                         metrics=[x for t, x in chunk if t == "m"], tags=[x for t, x in chunk if t == "t"])


@task(name="mlflow-open-run", cache_policy=NO_CACHE)
def open_run(uri: str, experiment: str, location: str | None, run_name: str,
             params: dict[str, str] | None = None, tags: dict[str, str] | None = None,
             parent_id: str | None = None) -> str:
    client = _client(uri)
    exp = _experiment_id(client, experiment, location)
    all_tags = dict(tags or {})
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    if not parent_id:
        mark_stale_runs(client, exp, f"by run {run_name}")
    run = client.create_run(exp, run_name=run_name, tags={**owner_tags(), **all_tags})
    if params:
        _log_batch(client, run.info.run_id, params=params)
    return run.info.run_id


@task(name="mlflow-log-stage", cache_policy=NO_CACHE)
def log_stage(uri: str, run_id: str, manifest: Manifest, cached: bool) -> list[str]:
    """Metrics, tags and artifacts of a finished (or cached) stage into its nested run; closes it.

    A cached stage whose producing run is in the experiment links to it (tags ``produced_by_run_id``,
    ``produced_by_run`` and a note) and uploads nothing; returns the relative paths uploaded.
    """
    client = _client(uri)
    _log_batch(client, run_id, metrics=numeric_metrics(manifest.metrics),
               tags={"cached": str(cached).lower(), "key": manifest.key, "stage": manifest.stage,
                     "artifact_dir": str(manifest.path), "code_version": manifest.code_version})
    if cached:
        exp = client.get_run(run_id).info.experiment_id
        src = producer_run(client, exp, manifest.stage, manifest.key)
        if src is not None:
            link = f"#/experiments/{exp}/runs/{src.info.run_id}"
            client.set_tag(run_id, "produced_by_run_id", src.info.run_id)
            client.set_tag(run_id, "produced_by_run", src.info.run_name or src.info.run_id)
            client.set_tag(run_id, "mlflow.note.content",
                           f"Cached: the artifacts of `{manifest.stage}/{manifest.key}` were produced by run "
                           f"[{src.info.run_name or src.info.run_id}]({link}) and are not uploaded again.")
            client.set_terminated(run_id, "FINISHED")
            return []
    logged = files_to_log(manifest, cached)
    by_dir: dict[str, list[Path]] = {}
    for rel in logged:
        parent = Path("stage", rel).parent.as_posix()
        by_dir.setdefault(parent, []).append(manifest.path / rel)
    for artifact_path, paths in by_dir.items():
        for p in paths:
            client.log_artifact(run_id, str(p), artifact_path)
    client.set_terminated(run_id, "FINISHED")
    return logged


@task(name="mlflow-close-run", cache_policy=NO_CACHE)
def close_run(uri: str, run_id: str, status: str = "FINISHED", message: str | None = None) -> None:
    client = _client(uri)
    if message:
        client.set_tag(run_id, "error", message[:5000])
    client.set_terminated(run_id, status)


@task(name="mlflow-register-model", cache_policy=NO_CACHE)
def register_model(uri: str, name: str, run_id: str, manifest: Manifest, tags: dict[str, str]) -> str:
    """Register the stage artifact logged in ``run_id`` as a version of ``name`` (once per stage key)."""
    client = _client(uri)
    try:
        client.create_registered_model(name)
    except Exception as e:  # already exists
        if "ALREADY_EXISTS" not in str(getattr(e, "error_code", e)):
            raise
    for mv in client.search_model_versions(f"name='{name}'"):
        if mv.tags.get("key") == manifest.key:
            return str(mv.version)
    source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/stage"
    mv = client.create_model_version(name, source=source, run_id=run_id,
                                     tags={**tags, "key": manifest.key, "stage": manifest.stage,
                                           "artifact_dir": str(manifest.path)})
    return str(mv.version)


class Tracker:
    """The MLflow side of one flow run; ``None`` trackers are simply not created when disabled."""

    def __init__(self, cfg: Config, run_name: str, profile: str = "", overrides: Iterable[str] = (),
                 extra_tags: Mapping[str, str] | None = None):
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        check_reachable(self.uri)
        opts = {"retries": cfg.orchestration.retries, "retry_delay_seconds": cfg.orchestration.retry_delay_s,
                "retry_condition_fn": retry_unless_deterministic}
        self._open = open_run.with_options(**opts)
        self._log = log_stage.with_options(**opts)
        self._close = close_run.with_options(**opts)
        self._register = register_model.with_options(**opts)
        tags = {"git_commit": git_commit(), "profile": profile, "overrides": json.dumps(list(overrides)),
                "profile_name": cfg.name, **(extra_tags or {})}
        self.tags = tags
        self.parent_id: str = self._open(self.uri, cfg.tracking.experiment, artifact_location(cfg), run_name,
                                         config_params(cfg), tags)
        self.stage_runs: dict[str, str] = {}
        self.open_stages: set[str] = set()
        self.registered_version: str | None = None

    def start_stage(self, node: Any, key: str | None = None) -> str:
        tags = {"stage": node.stage, "node": node.name, **({"key": key} if key else {})}
        run_id = self._open(self.uri, self.cfg.tracking.experiment, artifact_location(self.cfg), node.name,
                            None, tags, self.parent_id)
        self.stage_runs[node.name] = run_id
        self.open_stages.add(run_id)
        return run_id

    def finish_stage(self, node: Any, run_id: str, manifest: Manifest, cached: bool) -> None:
        """Log the stage; the primary strategy's DPO adapter also becomes a registered model version."""
        self._log(self.uri, run_id, manifest, cached)
        self.open_stages.discard(run_id)
        if node.stage == "dpo" and node.strategy == self.cfg.orchestration.strategies[0]:
            self.registered_version = self.register(node, manifest)

    def fail_stage(self, node: Any, run_id: str, message: str) -> None:
        self._close(self.uri, run_id, "FAILED", message)
        self.open_stages.discard(run_id)

    def kill_stage(self, node: Any, run_id: str | None, error: BaseException) -> None:
        """End a stage run interrupted by ``error`` (KILLED for SIGINT/SIGTERM), without Prefect tasks."""
        if run_id is None or run_id not in self.open_stages:
            return
        self.open_stages.discard(run_id)
        try:
            terminate_now(self.uri, run_id, end_status(error), end_message(error))
        except Exception:  # noqa: BLE001 - best effort while shutting down; the next run marks it stale
            pass

    def register(self, node: Any, manifest: Manifest) -> str | None:
        name = self.cfg.tracking.register_model
        if not name or node.name not in self.stage_runs:
            return None
        tags = {"strategy": node.strategy or "", "profile": self.tags.get("profile", ""),
                "parent_run_id": self.parent_id}
        return self._register(self.uri, name, self.stage_runs[node.name], manifest, tags)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        _log_batch(_client(self.uri), self.parent_id, metrics=numeric_metrics(metrics))

    def end(self, status: str = "FINISHED", message: str | None = None) -> None:
        if status == "FINISHED" or status == "FAILED" and not self.open_stages:
            self._close(self.uri, self.parent_id, status, message)
            return
        # interrupted: direct client calls (Prefect tasks may not run any more), open stage runs first
        for run_id in list(self.open_stages):
            try:
                terminate_now(self.uri, run_id, status, message)
            except Exception:  # noqa: BLE001
                pass
        self.open_stages.clear()
        terminate_now(self.uri, self.parent_id, status, message)

    def end_with(self, error: BaseException | None) -> None:
        """End the parent run as the flow ended: FINISHED, FAILED (an error) or KILLED (SIGINT/SIGTERM)."""
        self.end(end_status(error), end_message(error) if error is not None else None)


def latest_model_version(cfg: Config, name: str | None = None, version: str | None = None) -> Any:
    """The newest (or the given) version of the registered model; raises naming what is missing."""
    name = name or cfg.tracking.register_model
    if not name:
        raise ValueError("no registered model name: set tracking.register_model")
    client = _client(tracking_uri(cfg))
    versions = client.search_model_versions(f"name='{name}'")
    if version is not None:
        versions = [v for v in versions if str(v.version) == str(version)]
    if not versions:
        raise LookupError(f"registered model {name!r}" + (f" version {version}" if version else "")
                          + f" not found in {tracking_uri(cfg)}")
    return max(versions, key=lambda v: int(v.version))


def restore_stage(cfg: Config, model_version: Any) -> Manifest:
    """The registered stage artifact as a local folder: its original folder, or downloaded back there."""
    from tasks.common.artifacts import find_complete, stage_dir

    tags = model_version.tags
    stage, key = tags["stage"], tags["key"]
    root = Path(cfg.orchestration.artifacts_root).expanduser().resolve()
    found = find_complete(root, stage, key) or (
        Manifest.load(tags["artifact_dir"]) if (Path(tags["artifact_dir"]) / MANIFEST).is_file() else None)
    if found is not None:
        return found
    dest = stage_dir(root, stage, key)
    tmp = dest.parent / f".tmp-{key}-download"
    _client(tracking_uri(cfg)).download_artifacts(model_version.run_id, "stage", str(tmp))
    (tmp / "stage").rename(dest)
    tmp.rmdir()
    return Manifest.load(dest)


def _callback_class():
    from transformers import TrainerCallback

    class MlflowStepCallback(TrainerCallback):
        """Logs every ``on_log`` dict (loss, lr, rewards/…) to one MLflow run at the global step."""

        def __init__(self, uri: str, run_id: str):
            self.uri, self.run_id = uri, run_id
            self._client = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not getattr(state, "is_world_process_zero", True):
                return
            metrics = numeric_metrics(logs)
            if metrics:
                self._client = self._client or _client(self.uri)
                _log_batch(self._client, self.run_id, metrics=metrics, step=int(state.global_step))

    return MlflowStepCallback


def step_callbacks(cfg: Config, run_id: str | None) -> list[Any]:
    """[a TrainerCallback logging step metrics to ``run_id``], or [] when not tracking."""
    if not run_id or not cfg.tracking.enabled:
        return []
    return [_callback_class()(tracking_uri(cfg), run_id)]


def _duration(info: Any) -> float | None:
    if not info.start_time:
        return None
    end = info.end_time or (int(time.time() * 1000) if info.status == "RUNNING" else None)
    return (end - info.start_time) / 1000 if end else None


def recent_runs(uri: str, experiment: str, limit: int = 10) -> list[dict[str, Any]]:
    """The experiment's newest flow runs (parent runs), each with its stage runs, read from MLflow.

    ``[{"run_id", "name", "status", "start" (ms), "seconds", "profile", "reason",
        "stages": [{"name", "status", "cached", "seconds", "key", "produced_by"}]}]``; [] when the
    experiment does not exist.
    """
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return []
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    parents = client.search_runs([exp.experiment_id], "tags.profile_name != ''", max_results=limit,
                                 order_by=["attributes.start_time DESC"])
    parents = [p for p in parents if "mlflow.parentRunId" not in p.data.tags]
    out = []
    for p in parents:
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{p.info.run_id}'",
                                      max_results=1000, order_by=["attributes.start_time ASC"])
        out.append({
            "run_id": p.info.run_id, "name": p.info.run_name, "status": p.info.status,
            "start": p.info.start_time, "seconds": _duration(p.info), "profile": p.data.tags.get("profile", ""),
            "reason": p.data.tags.get(END_REASON_TAG) or p.data.tags.get("error", ""),
            "stages": [{"name": c.info.run_name, "status": c.info.status,
                        "cached": c.data.tags.get("cached") == "true", "seconds": _duration(c.info),
                        "key": c.data.tags.get("key", ""), "produced_by": c.data.tags.get("produced_by_run_id", "")}
                       for c in children],
        })
    return out


def last_stage_runs(uri: str, experiment: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(stage, key) -> the newest stage run with that key: ``{"status", "start", "run_id", "cached"}``."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in client.search_runs([exp.experiment_id], "tags.key != ''", max_results=5000,
                                order_by=["attributes.start_time DESC"]):
        k = (r.data.tags.get("stage", ""), r.data.tags.get("key", ""))
        if k not in out:
            out[k] = {"status": r.info.status, "start": r.info.start_time, "run_id": r.info.run_id,
                      "cached": r.data.tags.get("cached") == "true"}
    return out


def ui_url(uri: str, experiment: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI address of the experiment, on its model-training view (``workflowType=machine_learning``)."""
    exp_id = None
    try:
        exp = _client(uri).get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else None
    except Exception:  # noqa: BLE001 - just the address then
        pass
    path = f"/#/experiments/{exp_id}/runs" if exp_id else "/#/experiments"
    return f"{base}{path}?workflowType=machine_learning"
