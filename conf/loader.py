"""Load a YAML profile, apply ``section.key=value`` overrides, validate.

    >>> cfg = load_config("conf/tiny.yaml", ["dpo.beta=0.2", "sample.k=4"])
    >>> cfg.dpo.beta
    0.2

Override values are parsed as YAML (``true``, ``0.2``, ``[a, b]``, ``null``). Any error — missing
file, bad YAML, unknown key, wrong type — raises :class:`ConfigError` naming the file and the key.

A profile may start from another one: ``extends: tiny.yaml`` (a path relative to the profile) loads
that file first and deep-merges this one over it: mappings merge key by key, anything else (lists,
scalars) replaces. Chains are allowed; cycles are an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conf.schema import Config


class ConfigError(ValueError):
    """A profile or override that does not validate; the message names the file and key."""


def _expand(obj: Any) -> Any:
    if isinstance(obj, str):
        return os.path.expandvars(obj)
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    return obj


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"dpo.beta=0.2"`` -> (["dpo", "beta"], 0.2)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def _format_validation(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden"
                                          and not isinstance(e.get("input"), dict) else ""))
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(_expand(dict(data)))
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged onto ``base``: mappings merge recursively, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_profile(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a profile with its ``extends`` chain resolved (not validated)."""
    path = Path(path)
    if not path.is_file():
        where = f" (extended by {_chain[-1]})" if _chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"{path}: 'extends' cycle: {cycle}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends: expected a profile path, got {parent!r}")
    return deep_merge(read_profile(path.parent / parent, (*_chain, path.resolve())), raw)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (YAML, following ``extends``), apply overrides, validate. Raises :class:`ConfigError`."""
    path = Path(path)
    raw = read_profile(path)
    overrides = list(overrides)
    data = apply_overrides(raw, overrides)
    source = str(path) + (f" with overrides {overrides}" if overrides else "")
    return config_from_dict(data, source)


def config_hash(obj: Any) -> str:
    """Stable short sha256 of any JSON-able object (pydantic models are dumped first)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
