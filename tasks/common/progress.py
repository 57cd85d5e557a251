"""Progress of long work (pretraining, SFT, DPO, …): a bar in a terminal, periodic plain lines elsewhere.

    with Progress("base pretraining", total=1500, unit="step") as p:
        for step in ...:
            p.update(1, loss=2.31)

In a terminal (stderr is a TTY) this is a tqdm bar with step, rate and ETA. In a log file, under a
Prefect worker or when ``HNSDPO_PROGRESS=lines``, it is one line every ``every_s`` seconds (and one at
the end) through :func:`stage_logger` (the Prefect run logger inside a flow, so the lines reach the
Prefect API and ``prefect deployment run … --watch``; else the ``hnsdpo`` logger)::

    base pretraining: step 300/1500 (20%), 4.10 step/s, ETA 4m53s, loss 2.31

``HNSDPO_PROGRESS=off`` silences it; ``HNSDPO_PROGRESS_EVERY_S`` sets the line interval (default 30 s).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, TextIO

DEFAULT_EVERY_S = 30.0


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger when called inside a flow/task run, else ``logging.getLogger("hnsdpo")``."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
            return get_run_logger()
    except Exception:  # noqa: BLE001 - prefect missing or no context: plain logging
        pass
    log = logging.getLogger("hnsdpo")
    if not log.handlers and not logging.getLogger().handlers:  # a bare script: still say something
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return log


class StageLog:
    """A logger whose every call goes through :func:`stage_logger` at call time, for module-level use:
    inside a flow the lines reach the console, the Prefect UI and ``--watch``; outside it they go to
    ``logging.getLogger("hnsdpo")``."""

    def __getattr__(self, name: str):
        return getattr(stage_logger(), name)


run_log = StageLog()


def format_duration(seconds: float) -> str:
    """``75 -> '1m15s'``, ``3725 -> '1h02m'``; ``'?'`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def progress_mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: ``HNSDPO_PROGRESS`` when set, else ``bar`` on a TTY, ``lines`` otherwise."""
    mode = os.environ.get("HNSDPO_PROGRESS", "").strip().lower()
    if mode in ("bar", "lines", "off"):
        return mode
    stream = stream or sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Step counter with rate and ETA; see the module docstring. ``initial`` = steps already done (resume)."""

    def __init__(self, label: str, total: int | None, *, unit: str = "step", initial: int = 0,
                 every_s: float | None = None, mode: str | None = None, logger: Any = None,
                 stream: TextIO | None = None):
        self.label, self.total, self.unit = label, total, unit
        self.n = self.initial = int(initial)
        self.every_s = float(every_s if every_s is not None
                             else os.environ.get("HNSDPO_PROGRESS_EVERY_S", DEFAULT_EVERY_S))
        self.mode = mode or progress_mode(stream)
        self.postfix: dict[str, Any] = {}
        self._log = logger
        self._t0 = self._last = time.monotonic()
        self._bar = None
        self._closed = False
        self.lines: list[str] = []  # every plain line emitted (tests, summaries)
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=self.initial, desc=label, unit=unit, file=stream or sys.stderr,
                             dynamic_ncols=True, leave=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def rate(self) -> float:
        """Steps per second since start (steps done before a resume are not counted)."""
        done = self.n - self.initial
        return done / self.elapsed if self.elapsed > 0 and done > 0 else 0.0

    def eta(self) -> float:
        r = self.rate()
        if not self.total or r <= 0:
            return float("nan")
        return max(0.0, (self.total - self.n) / r)

    def line(self) -> str:
        if self.total:
            head = f"{self.label}: {self.unit} {self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
        else:
            head = f"{self.label}: {self.unit} {self.n}"
        parts = [head, f"{self.rate():.2f} {self.unit}/s"]
        if self.n < (self.total or 0):
            parts.append(f"ETA {format_duration(self.eta())}")
        else:
            parts.append(f"took {format_duration(self.elapsed)}")
        parts += [f"{k} {_fmt(v)}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _emit(self) -> None:
        text = self.line()
        self.lines.append(text)
        (self._log or stage_logger()).info(text)

    def start_at(self, n: int) -> None:
        """Steps already done before this run (a resumed checkpoint): counted as done, not in the rate."""
        self.n = self.initial = int(n)
        if self._bar is not None:
            self._bar.n = self._bar.initial = self.n
            self._bar.refresh()

    def set(self, **postfix: Any) -> None:
        """Values shown after the rate (e.g. ``loss=2.31``); kept until changed."""
        self.postfix.update({k: v for k, v in postfix.items() if v is not None})
        if self._bar is not None and self.postfix:
            self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if postfix:
            self.set(**postfix)
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.every_s:
                self._last = now
                self._emit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and self.n > self.initial:
            self._emit()
