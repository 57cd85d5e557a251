"""Stage artifacts: content keys, manifests and atomic writes.

Each stage writes ``<root>/<stage>/<key>/`` holding its files and ``manifest.json``::

    {"stage": "verify", "key": "3f2a…", "config": {...}, "inputs": {"sample": "9c1e…"},
     "files": {"verdicts.jsonl": {"sha256": "…", "rows": 3200}}, "metrics": {"correct_rate": 0.41},
     "code_version": "3", "created": "2026-11-26T12:00:00+00:00"}

``key`` = hash(stage config, upstream keys, stage ``VERSION``). The folder is built under
``<root>/<stage>/.tmp-<key>-<pid>`` and renamed into place only when complete, so a killed stage
leaves nothing that looks finished.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conf import config_hash

MANIFEST = "manifest.json"


class DeterministicError(Exception):
    """An error the same inputs reproduce (bad data, a wrong setting, a missing upstream file): retrying
    cannot help, so Prefect does not retry it (:func:`is_deterministic`)."""


# Reproducible failures besides DeterministicError: config and data errors (``ConfigError``,
# ``DataError``/``BadRowError`` are ValueErrors), programming errors, files that are not there.
DETERMINISTIC: tuple[type[BaseException], ...] = (
    DeterministicError, ValueError, TypeError, KeyError, IndexError, AttributeError, ImportError,
    NotImplementedError, AssertionError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
    PermissionError,
)


def is_deterministic(exc: BaseException | None) -> bool:
    """True for errors a retry would only repeat; I/O (other OSErrors, timeouts, connections) is not."""
    return isinstance(exc, DETERMINISTIC)


def retry_unless_deterministic(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task unless its exception is deterministic."""
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as e:  # noqa: BLE001 - the state re-raised its exception
        exc = e
    return not is_deterministic(exc if isinstance(exc, BaseException) else None)


def stage_key(stage: str, config: Any, inputs: Mapping[str, str], version: str) -> str:
    """Content key of a stage run: its config, its upstream keys and its code version."""
    return config_hash({"stage": stage, "config": config, "inputs": dict(sorted(inputs.items())),
                        "version": str(version)})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


FULL_HASH_LIMIT = 64 << 20  # files above this are fingerprinted by size and three sampled megabytes


def _file_fingerprint(p: Path) -> str:
    size = p.stat().st_size
    if size <= FULL_HASH_LIMIT:
        return sha256_file(p)
    h = hashlib.sha256(str(size).encode())
    with p.open("rb") as f:
        for offset in (0, size // 2, size - (1 << 20)):
            f.seek(offset)
            h.update(f.read(1 << 20))
    return "sampled:" + h.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """Content fingerprint of a local model folder (or file): every file's relative path and sha256, hashed.

    It keys the stages that read a local model (``model.name_or_path`` a path), so replacing the weights at the
    same path invalidates the cache. Files over 64 MB (a real model's shards) are fingerprinted by their size
    and three sampled megabytes, so planning a multi-GB model reads a few megabytes per shard (no mtime
    shortcut: a copy or a checkout changes mtimes, not contents). Hidden files (``.git``, ``.cache``) and
    Markdown (a model card: nothing loads it) are skipped."""
    root = Path(folder).expanduser().resolve()
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() != ".md"
        and not any(part.startswith(".") for part in p.relative_to(root).parts))
    entries = []
    for p in files:
        rel = p.name if p == root else p.relative_to(root).as_posix()
        entries.append((rel, _file_fingerprint(p)))
    return config_hash(entries)


def _rows(path: Path) -> int | None:
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # pragma: no cover - pyarrow missing or unreadable file
            return None
    return None


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """name -> {sha256, rows, bytes} for every file under ``folder`` except the manifest."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            out[rel] = {"sha256": sha256_file(p), "rows": _rows(p), "bytes": p.stat().st_size}
    return out


@dataclass(frozen=True)
class Manifest:
    stage: str
    key: str
    path: Path
    config: Any = None
    inputs: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""
    created: str = ""
    cached: bool = False

    def file(self, name: str) -> Path:
        return self.path / name

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "key": self.key, "config": self.config, "inputs": self.inputs,
                "files": self.files, "metrics": self.metrics, "code_version": self.code_version,
                "created": self.created}

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        folder = Path(folder)
        d = json.loads((folder / MANIFEST).read_text())
        return cls(path=folder, cached=True, **d)


def stage_dir(root: str | Path, stage: str, key: str) -> Path:
    return Path(root) / stage / key


def find_complete(root: str | Path, stage: str, key: str) -> Manifest | None:
    folder = stage_dir(root, stage, key)
    if (folder / MANIFEST).is_file():
        try:
            return Manifest.load(folder)
        except (OSError, ValueError, TypeError):
            return None
    return None


def tmp_owner_alive(folder: Path) -> bool:
    """Whether a ``.tmp-<key>-<pid>`` work folder belongs to a live process (``.tmp-<key>``: never)."""
    tail = folder.name.rsplit("-", 1)[-1]
    if not folder.name.startswith(".tmp-") or not tail.isdigit() or folder.name.count("-") < 2:
        return False
    try:
        os.kill(int(tail), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scan_artifacts(root: str | Path, stages: Any) -> list[tuple[str, str, Path]]:
    """(stage, name, folder) of every complete key folder and ``.tmp-*`` folder under ``root/<stage>``."""
    out = []
    for stage in stages:
        folder = Path(root) / stage
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_dir() and (p.name.startswith(".tmp-") or (p / MANIFEST).is_file()):
                out.append((stage, p.name, p))
    return out


def build_stage(
    root: str | Path,
    stage: str,
    version: str,
    config: Any,
    inputs: Mapping[str, Manifest],
    fn: Callable[[Path], Mapping[str, Any] | None],
    *,
    key: str | None = None,
    resume_dir: bool = False,
) -> Manifest:
    """Return the complete artifact for this (config, inputs, version), building it if needed.

    ``fn(workdir)`` writes the stage's files into ``workdir`` and returns its metrics. With
    ``resume_dir=True`` the work folder has a stable name (``.tmp-<key>``) and is kept when ``fn``
    fails, so stages that checkpoint (training, sharded sampling) resume from it on the next call.
    """
    cfg_json = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    input_keys = {name: m.key for name, m in inputs.items()}
    key = key or stage_key(stage, cfg_json, input_keys, version)
    done = find_complete(root, stage, key)
    if done is not None:
        return done
    final = stage_dir(root, stage, key)
    work = final.parent / (f".tmp-{key}" if resume_dir else f".tmp-{key}-{os.getpid()}")
    if not resume_dir and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        metrics = dict(fn(work) or {})
    except BaseException:
        if not resume_dir:
            shutil.rmtree(work, ignore_errors=True)
        raise
    manifest = Manifest(
        stage=stage, key=key, path=final, config=cfg_json, inputs=input_keys,
        files=describe_files(work), metrics=metrics, code_version=str(version),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    (work / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, default=str))
    if final.exists():  # a concurrent run finished first: keep theirs
        shutil.rmtree(work, ignore_errors=True)
        return Manifest.load(final)
    os.replace(work, final)
    return manifest
