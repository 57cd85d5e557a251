"""Process-pool scoring that never stalls, and never times items out because the machine is busy.

Items are mappings with ``question``, ``solution``, ``gold``, optional ``reference``, and pass-through
``problem_id``/``index``::

    {"problem_id": "gsm8k_train-0", "index": 2, "question": "...", "solution": "... #### 72", "gold": "72"}

The pool is a :class:`pebble.ProcessPool`. Items go to the workers in chunks (``chunk_size``; by default up to
:data:`MAX_CHUNK` items, small enough that every worker gets at least eight chunks): one
``schedule(_score_chunk, ..., timeout=...)`` per chunk, which saves most of the per-task round trip (one item
per task cost ~50% more CPU per GSM8K solution than scoring alone, chunks of 16 ~15%). A chunk that does not
come back whole (its worker was killed or died) is scheduled again one item per task, so the item at fault
gets its own ``timeout`` or ``error`` verdict under exactly the single-item rules below and the others are
scored as if nothing had happened; an item that raises inside a chunk gets its ``error`` verdict there.
Verdicts are put back in input order. How time is counted (the per-solution budget is
``VerifyConfig.time_budget_s``):

- A worker imports sympy/math-verify and scores a warm-up item in the pool's initializer, before it takes
  any item, so start-up time (however slow under load) never counts against an item. Workers take one item
  at a time, and pebble starts an item's clock when a worker acknowledges it, never while it waits in the
  queue.
- The budget is CPU time: inside the worker ``MathVerifier.score`` stops itself at ``time_budget_s`` of
  CPU (timer signal; a ``timeout`` verdict, the worker lives on). For code that ignores signals, the worker
  sets its own ``RLIMIT_CPU`` (soft) at the item's start to ``budget + grace`` CPU seconds more than it has
  used, rounded up to a whole second, so the kernel ends it (``SIGXCPU``); as a backstop for an item that
  blocks without using CPU, pebble kills a worker whose task (an item, or a chunk) has run ``wall_limit_s``
  wall seconds (default ``max(10 * budget, 30 s)``). Either way pebble starts a fresh worker and the item
  gets a ``timeout`` verdict (a chunk's items are first re-run one per task, as above). A worker that dies
  gives its item an ``error`` verdict and is replaced. A pool whose workers cannot start (pebble: "broken";
  or no item started within ``STARTUP_LIMIT_S``) is replaced by a new one for the items left; after
  ``MAX_START_FAILURES`` such pools in a row the remaining items get ``error`` verdicts.

Start methods (``start_method``): ``"fork"`` (fast; used automatically when the calling process has a
single thread and the platform has fork): the pool's workers are forked from the caller; or ``"exec"``: a
fresh interpreter (``python -c ...``) that imports only ``verifier`` hosts the pool and streams the
outcomes back, so no worker is forked from a threaded caller (such as a Prefect task) and none re-runs the
caller's ``__main__``. Still, guard scripts with ``if __name__ == "__main__":`` as multiprocessing code
should be. ``VERIFIER_WORKER_INIT_DELAY_S`` (seconds, float) makes every worker sleep during start-up:
fault injection for tests of slow starts.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import NamedTuple

from pebble import ProcessExpired, ProcessPool
from pebble.common import CONSTS as PEBBLE_CONSTS

from verifier.verdict import Verdict

try:
    import resource
except ImportError:  # Windows has no resource module: the in-worker timer and the wall-clock backstop remain
    resource = None  # type: ignore[assignment]

REQUIRED = ("question", "solution", "gold")
STARTUP_LIMIT_S = 180.0  # a pool that starts no item in this long is replaced
POLL_S = 0.5  # how often the parent checks that the pool is alive while no result comes
MAX_START_FAILURES = 3
MAX_CHUNK = 16  # items per task at most (docs/verifier.md: ~10% more GSM8K solutions/s on 2 workers than 1)
INIT_DELAY_ENV = "VERIFIER_WORKER_INIT_DELAY_S"
# pebble's manager threads sleep this long between checks (its default is 0.1 s), and ``pool.join()`` waits for
# the sleeping one: a 1,000-item GSM8K batch (~1 s) lost 0-100 ms there at the end
PEBBLE_POLL_S = 0.01
WARM_UP = ("What is 3 + 4?", "3 + 4 = 7.\nThe answer is $\\boxed{7}$.", "\\frac{14}{2}")

Outcome = tuple[str, object]  # ("ok", verdict dict) or ("timeout" | "error", note)


class Limits(NamedTuple):
    """Per-item limits: the budget (CPU s, enforced inside ``MathVerifier.score``), the CPU seconds after
    which the kernel ends the worker, and the wall seconds after which pebble does."""

    budget_s: float
    cpu_s: float
    wall_s: float

    @classmethod
    def of(cls, budget_s: float, wall_limit_s: float | None = None) -> Limits:
        from verifier.core import wall_backstop_s

        wall = wall_limit_s if wall_limit_s is not None else wall_backstop_s(budget_s)
        return cls(budget_s, budget_s + max(0.5, 0.5 * budget_s), wall)


def _item_args(item: Mapping, pos: int) -> tuple[dict, str | None]:
    """Keyword arguments for ``MathVerifier.score``, or an error naming the row and key."""
    if not isinstance(item, Mapping):
        return {}, f"item {pos}: expected a mapping, got {type(item).__name__}"
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        return {}, f"item {pos}: missing key(s) {missing}"
    sol = item["solution"]
    if not isinstance(sol, str) and not (isinstance(sol, list) and all(isinstance(s, str) for s in sol)):
        return {}, f"item {pos}: 'solution' must be a string or a list of strings"
    try:
        index = int(item.get("index", pos))
    except (TypeError, ValueError):
        return {}, f"item {pos}: 'index' must be an integer"
    return {
        "question": str(item["question"] or ""), "solution": sol, "gold": str(item["gold"] or ""),
        "reference": item.get("reference") if isinstance(item.get("reference"), str) else None,
        "problem_id": str(item.get("problem_id", "")), "index": index,
    }, None


# ---------------------------------------------------------------- worker side
_WORKER = None  # the worker's MathVerifier, built by _init_worker


def _init_worker(config_json: str) -> None:
    """Pool initializer: build the verifier, import math-verify and score a warm-up item before any item."""
    global _WORKER
    from conf.schema import VerifyConfig
    from verifier.core import MathVerifier

    if resource is not None:  # a worker the kernel ends for CPU time writes no core file
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    v = MathVerifier(VerifyConfig.model_validate_json(config_json))
    try:
        import math_verify  # noqa: F401 - imported up front, not inside the first item's budget
    except ImportError:
        pass
    v.score(*WARM_UP)
    delay = _init_delay()
    if delay > 0:
        time.sleep(delay)
    _WORKER = v


def _score_item(kwargs: dict, cpu_limit_s: float) -> dict:
    """One verdict (as a dict); the kernel ends this worker if the item uses ``cpu_limit_s`` CPU seconds."""
    with _cpu_limit(cpu_limit_s):
        return _WORKER.score(**kwargs).model_dump()


def _score_chunk(chunk: list[dict], cpu_limit_s: float) -> list[Outcome]:
    """An outcome per item: ``("ok", verdict dict)``, or ``("error", note)`` for an item that raised; each item
    under its own CPU limit."""
    out: list[Outcome] = []
    for kwargs in chunk:
        try:
            out.append(("ok", _score_item(kwargs, cpu_limit_s)))
        except Exception as exc:  # noqa: BLE001 - every item gets a verdict
            out.append(("error", _error_note(exc)))
    return out


def _error_note(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@contextmanager
def _cpu_limit(seconds: float):
    """``RLIMIT_CPU`` (soft) at ``seconds`` more than this process has used (whole seconds, rounded up)."""
    if resource is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    limit = math.ceil(time.process_time() + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _init_delay() -> float:
    try:
        return float(os.environ.get(INIT_DELAY_ENV, "0") or 0)
    except ValueError:
        return 0.0


# ---------------------------------------------------------------- the pool
def _pool_outcomes(jobs: dict[int, dict], config_json: str, n_workers: int,
                   limits: Limits, chunk_size: int | None = None) -> Iterator[tuple[int, Outcome]]:
    """``(position, outcome)`` for every job, as they finish; a pool that breaks is replaced for the rest."""
    _preload()
    failures, why = 0, ""
    with _pebble_polls(PEBBLE_POLL_S):
        while jobs and failures < MAX_START_FAILURES:
            left, why, started = yield from _one_pool(jobs, config_json, n_workers, limits, chunk_size)
            failures = 0 if started else failures + 1
            jobs = {p: jobs[p] for p in left}
    note = f"could not start a verifier worker ({why or 'unknown reason'})"
    for pos in jobs:
        yield pos, ("error", note)


@contextmanager
def _pebble_polls(seconds: float):
    """pebble's poll interval at most ``seconds`` while pools of ours live (a process-wide setting)."""
    old = PEBBLE_CONSTS.sleep_unit
    PEBBLE_CONSTS.sleep_unit = min(old, seconds)
    try:
        yield
    finally:
        PEBBLE_CONSTS.sleep_unit = old


def auto_chunk_size(n_jobs: int, n_workers: int) -> int:
    """Items per task: at most :data:`MAX_CHUNK`, and at least eight tasks per worker (load balance)."""
    return max(1, min(MAX_CHUNK, n_jobs // (8 * max(1, n_workers))))


def _one_pool(jobs: dict[int, dict], config_json: str, n_workers: int, limits: Limits,
              chunk_size: int | None = None):
    """Yields ``(position, outcome)`` from one pebble pool; returns (the positions it left undone because it
    broke or started nothing in ``STARTUP_LIMIT_S``, why, whether it finished any item)."""
    pool = ProcessPool(max_workers=n_workers, initializer=_init_worker, initargs=(config_json,),
                       context=mp.get_context("fork"))
    futures: dict[Future, list[int]] = {}

    def submit(positions: list[int]) -> None:
        fut = pool.schedule(_score_chunk, args=([jobs[p] for p in positions], limits.cpu_s), timeout=limits.wall_s)
        futures[fut] = positions

    order = list(jobs)
    size = chunk_size or auto_chunk_size(len(order), n_workers)
    for i in range(0, len(order), size):
        submit(order[i: i + size])
    left, why, started = [], "", False
    try:
        for fut in _as_completed(futures, pool):
            positions = futures[fut]
            outcome = _outcome(fut, limits)
            if outcome is None:  # the pool broke: its workers died before they could take an item
                left += positions
                why = f"the worker pool broke: {fut.exception() or 'no reason given'}"
                continue
            started = True
            if outcome[0] == "ok":
                yield from zip(positions, outcome[1], strict=True)
            elif len(positions) > 1:  # killed or died with a chunk: each item again, alone
                for pos in positions:
                    submit([pos])
            else:
                yield positions[0], outcome
        left += [pos for fut, positions in futures.items() if not fut.done() for pos in positions]
        if left and not why:
            why = "the worker pool broke" if not pool.active else f"no worker ready after {STARTUP_LIMIT_S:g} s"
    finally:
        pool.stop()
        pool.join()
    return sorted(left), why, started


def _as_completed(futures: Mapping[Future, object], pool: ProcessPool) -> Iterator[Future]:
    """The futures as they finish, including those added to ``futures`` while this runs; stops early when
    the pool broke (pebble leaves the items it never dispatched pending) or when no item has finished or
    run for ``STARTUP_LIMIT_S``."""
    finished: queue.SimpleQueue = queue.SimpleQueue()
    watched = n = 0  # futures are only ever added, and a dict keeps their order: the new ones come last
    while n < len(futures):
        for fut in list(itertools.islice(futures, watched, None)):
            fut.add_done_callback(finished.put)
        watched = len(futures)
        idle = 0.0
        while True:
            try:
                fut = finished.get(timeout=POLL_S)
                break
            except queue.Empty:
                idle += POLL_S
                if not pool.active or (idle >= STARTUP_LIMIT_S and not any(f.running() for f in futures)):
                    return
        n += 1
        yield fut


def _outcome(fut: Future, limits: Limits) -> Outcome | None:
    """The outcome of a finished future; None when the pool broke."""
    try:
        return "ok", fut.result()
    except BrokenProcessPool:
        return None
    except TimeoutError:
        return "timeout", (f"exceeded the {limits.budget_s:g} s budget ({limits.wall_s:.1f} s wall); "
                           "worker killed and replaced")
    except ProcessExpired as exc:
        if exc.exitcode == -signal.SIGXCPU:
            return "timeout", (f"exceeded the {limits.budget_s:g} s budget (over {limits.cpu_s:.1f} s CPU); "
                               "worker killed and replaced")
        return "error", f"worker died (exit code {exc.exitcode})"
    except Exception as exc:  # noqa: BLE001 - every item gets a verdict
        return "error", _error_note(exc)


# ---------------------------------------------------------------- exec: the pool in a fresh interpreter
def _exec_outcomes(jobs: dict[int, dict], config_json: str, n_workers: int,
                   limits: Limits, chunk_size: int | None = None) -> Iterator[tuple[int, Outcome]]:
    """:func:`_pool_outcomes` run by a fresh interpreter (``_host``), which imports only ``verifier``."""
    a, b = socket.socketpair()
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-c", "import sys; from verifier.batch import _host; _host(int(sys.argv[1]))",
           str(b.fileno())]
    try:
        proc = subprocess.Popen(cmd, pass_fds=(b.fileno(),), env=env, stdin=subprocess.DEVNULL, close_fds=True)
    finally:
        b.close()
    conn, left = Connection(a.detach()), set(jobs)
    try:
        conn.send((jobs, config_json, n_workers, limits, chunk_size))
        while left:
            pos, outcome = conn.recv()
            left.discard(pos)
            yield pos, outcome
    except (EOFError, OSError):
        note = f"the verifier pool process ended early (exit code {proc.poll()})"
        yield from ((pos, ("error", note)) for pos in sorted(left))
    finally:
        conn.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _host(fd: int) -> None:
    """Entry point of the ``exec`` pool process: jobs in, ``(position, outcome)`` out, one by one."""
    conn = Connection(fd)
    jobs, config_json, n_workers, limits, chunk_size = conn.recv()
    for pos, outcome in _pool_outcomes(jobs, config_json, n_workers, Limits(*limits), chunk_size):
        conn.send((pos, outcome))
    conn.close()


def _auto_method() -> str:
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "exec"


def _preload() -> None:
    """Import the heavy libraries once in the parent so forked workers inherit them."""
    try:
        import math_verify  # noqa: F401
        import sympy  # noqa: F401
    except ImportError:
        pass


class _Bar:
    """rich progress without its refresh thread (no thread of ours may hold a lock when pebble forks a worker)."""

    def __init__(self, total: int, enabled: bool, description: str):
        self.bar = None
        self.last = 0.0
        if not enabled:
            return
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), auto_refresh=False, transient=False)
            self.bar.start()
            self.task = self.bar.add_task(description, total=total)
        except Exception:  # noqa: BLE001 - the bar is cosmetic
            self.bar = None

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar is not None and (force or now - self.last > 0.2):
            self.last = now
            self.bar.update(self.task, completed=done)
            self.bar.refresh()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def score_batch(verifier, items: Sequence[Mapping], workers: int = 2, progress: bool = True,
                description: str = "verifying", start_method: str | None = None,
                wall_limit_s: float | None = None, chunk_size: int | None = None) -> list[Verdict]:
    """Verdicts for ``items`` in input order, scored by ``workers`` processes (see the module doc).

    ``start_method``: ``"fork"``, ``"exec"`` or None (fork when the caller is single-threaded, else exec).
    ``wall_limit_s``: wall seconds after a task (an item or a chunk) starts before its worker is killed
    (default ``max(10 * time_budget_s, 30)``). ``chunk_size``: items per task (default
    :func:`auto_chunk_size`; 1 sends every item alone)."""
    items = list(items)
    method = start_method or _auto_method()
    if method not in ("fork", "exec"):
        raise ValueError(f"start_method must be 'fork', 'exec' or None, not {method!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    out, jobs = _prepare(verifier, items)
    if not jobs:
        return out  # type: ignore[return-value]
    run = _pool_outcomes if method == "fork" else _exec_outcomes
    limits = Limits.of(verifier.config.time_budget_s, wall_limit_s)
    bar = _Bar(len(items), progress, description)
    done = len(items) - len(jobs)
    try:
        n_workers = max(1, min(workers, len(jobs)))
        for pos, outcome in run(jobs, verifier.config.model_dump_json(), n_workers, limits, chunk_size):
            done += out[pos] is None
            out[pos] = _to_verdict(verifier, items[pos], pos, outcome)
            bar.update(done)
        bar.update(done, force=True)
    finally:
        bar.stop()
    return out  # type: ignore[return-value]


def _prepare(verifier, items: list) -> tuple[list[Verdict | None], dict[int, dict]]:
    """(error verdicts for the bad rows, None elsewhere; ``MathVerifier.score`` arguments of the others)."""
    out: list[Verdict | None] = [None] * len(items)
    jobs: dict[int, dict] = {}
    for pos, item in enumerate(items):
        kwargs, err = _item_args(item, pos)
        if err:
            pid = str(item.get("problem_id", "")) if isinstance(item, Mapping) else ""
            out[pos] = verifier.failed_verdict("error", err, pid, pos)
        else:
            jobs[pos] = kwargs
    return out, jobs


def _to_verdict(verifier, item: Mapping, pos: int, outcome: Outcome) -> Verdict:
    status, value = outcome
    if status == "ok":
        return Verdict.model_validate(value)
    return verifier.failed_verdict(status, str(value), item.get("problem_id", ""), _index(item, pos),
                                   item.get("solution") if status == "timeout" else None)


def _index(item: Mapping, pos: int) -> int:
    try:
        return int(item.get("index", pos))
    except (TypeError, ValueError):
        return pos
