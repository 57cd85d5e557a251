"""Which code produced a result: the git commit of the project checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(cwd: str | Path | None = None, short: bool = False, dirty: bool = False) -> str:
    """``git rev-parse HEAD`` of ``cwd`` (default: the project), or "unknown". ``short``: the abbreviated hash;
    ``dirty``: "-dirty" appended when tracked files differ from that commit."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=cwd,
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return "unknown"
        changed = dirty and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                           capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if changed else "")
