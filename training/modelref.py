"""Where a stage's model lives: ``model.json`` in a model-producing stage folder.

    {"base": "Qwen/Qwen2.5-1.5B-Instruct", "adapter": "adapter", "merged": "merged"}

``base`` is a hub id or a path; paths (and ``adapter``/``merged``) are stored relative to the
folder holding ``model.json`` so an artifacts root can be moved or copied as a whole. A stage's
temporary work folder sits at the same depth as its final folder, so relative paths written
there stay valid after the rename.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MODEL_JSON = "model.json"


@dataclass(frozen=True)
class ModelRef:
    base: str  # hub id or absolute local path (resolved)
    adapter: str | None = None  # absolute path of a PEFT adapter on top of base
    merged: str | None = None  # absolute path of base+adapter merged weights, when saved

    @property
    def tokenizer(self) -> str:
        return self.merged or self.base


def _is_path(ref: str) -> bool:
    return ref.startswith(("/", ".")) or Path(ref).exists()


def write_model_ref(folder: str | Path, base: str, adapter: str | Path | None = None,
                    merged: str | Path | None = None) -> Path:
    """Write ``folder/model.json``; local paths are stored relative to ``folder``."""
    folder = Path(folder)

    def rel(p: str | Path | None) -> str | None:
        if p is None:
            return None
        p = str(p)
        if not _is_path(p):
            return p  # hub id
        return os.path.relpath(Path(p).resolve(), folder.resolve())

    data = {"base": rel(base), "adapter": rel(adapter), "merged": rel(merged)}
    out = folder / MODEL_JSON
    out.write_text(json.dumps(data, indent=2))
    return out


def read_model_ref(folder: str | Path) -> ModelRef:
    folder = Path(folder)
    data = json.loads((folder / MODEL_JSON).read_text())

    def res(p: str | None) -> str | None:
        if p is None:
            return None
        cand = (folder / p)
        return str(cand.resolve()) if cand.exists() else p

    return ModelRef(**{k: res(v) for k, v in data.items()})


__all__ = ["MODEL_JSON", "ModelRef", "read_model_ref", "write_model_ref", "asdict"]
