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
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from conf import Config
from tasks.artifacts import MANIFEST, Manifest

MAX_ARTIFACT_BYTES = 5 * 1024 * 1024
NEVER_LOGGED = ("model/", "merged/", "checkpoints/")  # full weights and resumable state stay on disk
ALWAYS_LOGGED = ("adapter/",)
MAX_PARAM_CHARS = 6000
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")


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


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client: Any, name: str, location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


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
    run = client.create_run(exp, run_name=run_name, tags=all_tags)
    if params:
        _log_batch(client, run.info.run_id, params=params)
    return run.info.run_id


@task(name="mlflow-log-stage", cache_policy=NO_CACHE)
def log_stage(uri: str, run_id: str, manifest: Manifest, cached: bool) -> list[str]:
    """Metrics, tags and artifacts of a finished (or cached) stage into its nested run; closes it."""
    client = _client(uri)
    _log_batch(client, run_id, metrics=numeric_metrics(manifest.metrics),
               tags={"cached": str(cached).lower(), "key": manifest.key, "stage": manifest.stage,
                     "artifact_dir": str(manifest.path), "code_version": manifest.code_version})
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
        opts = {"retries": cfg.orchestration.retries, "retry_delay_seconds": cfg.orchestration.retry_delay_s}
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
        self.registered_version: str | None = None

    def start_stage(self, node: Any) -> str:
        run_id = self._open(self.uri, self.cfg.tracking.experiment, artifact_location(self.cfg), node.name,
                            None, {"stage": node.stage, "node": node.name}, self.parent_id)
        self.stage_runs[node.name] = run_id
        return run_id

    def finish_stage(self, node: Any, run_id: str, manifest: Manifest, cached: bool) -> None:
        """Log the stage; the primary strategy's DPO adapter also becomes a registered model version."""
        self._log(self.uri, run_id, manifest, cached)
        if node.stage == "dpo" and node.strategy == self.cfg.orchestration.strategies[0]:
            self.registered_version = self.register(node, manifest)

    def fail_stage(self, node: Any, run_id: str, message: str) -> None:
        self._close(self.uri, run_id, "FAILED", message)

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
        self._close(self.uri, self.parent_id, status, message)


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
    from tasks.artifacts import find_complete, stage_dir

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
