"""Process-pool scoring that never stalls, and never times items out because the machine is busy.

Items are mappings with ``question``, ``solution``, ``gold``, optional ``reference``, and pass-through
``problem_id``/``index``::

    {"problem_id": "gsm8k_train-0", "index": 2, "question": "...", "solution": "... #### 72", "gold": "72"}

How time is counted (the per-solution budget is ``VerifyConfig.time_budget_s``):

- A worker imports sympy/math-verify, scores a warm-up item and only then reports ``ready``; no item is
  handed to it before that, so start-up time (however slow under load) never counts against an item.
- Work goes out in chunks (up to ``MAX_CHUNK`` items, ``CHUNK_BYTES`` pickled bytes; one chunk ahead per
  worker) and each result comes back on its own; an item's clock starts when the worker actually begins it
  (the previous result, or ``ready``), never while it waits in a queue.
- The budget is CPU time: inside the worker ``MathVerifier.score`` stops itself at ``time_budget_s`` of
  CPU (timer signal; a ``timeout`` verdict, the worker lives on). The parent also watches the worker's CPU
  time (``/proc``) and kills a worker whose item has used ``budget + grace`` CPU seconds (code that ignores
  signals), and, as a backstop for an item that blocks without using CPU, one whose item has run
  ``wall_limit_s`` wall seconds (default ``max(10 * budget, 30 s)``). The killed item gets a ``timeout``
  verdict, the rest of its chunk is re-queued and a fresh worker takes over. A worker that dies gives its
  item an ``error`` verdict; a worker that cannot start is retried, and after ``MAX_START_FAILURES`` failed
  starts in a row the remaining items get ``error`` verdicts.

Start methods (``start_method``): ``"fork"`` (fast; used automatically when the calling process has a
single thread and the platform has fork) or ``"exec"``: a fresh interpreter (``python -c ...``) that imports
only ``verifier``, so it never re-runs the caller's ``__main__`` and is safe from threaded callers such as
Prefect tasks. Neither re-imports ``__main__``; still, guard scripts with ``if __name__ == "__main__":`` as
multiprocessing code should be. ``VERIFIER_WORKER_INIT_DELAY_S`` (seconds, float) makes every worker sleep
during start-up: fault injection for tests of slow starts.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait

from verifier.verdict import Verdict

REQUIRED = ("question", "solution", "gold")
MAX_CHUNK = 32  # items per message to a worker
CHUNK_BYTES = 64_000  # a chunk larger than this is only sent to an idle worker (the parent never blocks)
STARTUP_LIMIT_S = 180.0  # a worker that is not ready by then is killed and replaced
MAX_START_FAILURES = 3
POLL_S = 0.25  # how often a busy worker's CPU time is read once its item is past the budget
INIT_DELAY_ENV = "VERIFIER_WORKER_INIT_DELAY_S"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
def _serve(conn: Connection, config_json: str) -> None:
    """Worker loop: start up, report ready, then score chunks, sending each result as it is done."""
    from conf.schema import VerifyConfig
    from verifier.core import MathVerifier

    v = MathVerifier(VerifyConfig.model_validate_json(config_json))
    try:
        import math_verify  # noqa: F401 - imported up front, not inside the first item's budget
    except ImportError:
        pass
    v.score("What is 3 + 4?", "3 + 4 = 7.\nThe answer is $\\boxed{7}$.", "\\frac{14}{2}")  # warm-up
    delay = _init_delay()
    if delay > 0:
        time.sleep(delay)
    conn.send(("ready", os.getpid(), time.process_time()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        for pos, blob in msg:
            verdict = v.score(**pickle.loads(blob))
            try:
                conn.send((pos, verdict.model_dump(), time.process_time()))
            except (BrokenPipeError, OSError):
                return


def _init_delay() -> float:
    try:
        return float(os.environ.get(INIT_DELAY_ENV, "0") or 0)
    except ValueError:
        return 0.0


def _fork_worker(conn: Connection, config_json: str) -> None:
    _serve(conn, config_json)


def _exec_worker(fd: int) -> None:
    """Entry point of an ``exec`` worker: the first message on the socket is the config JSON."""
    conn = Connection(fd)
    try:
        config_json = conn.recv()
    except (EOFError, OSError):
        return
    _serve(conn, config_json)


# ---------------------------------------------------------------- parent side
class _Proc:
    """A worker process started by fork (multiprocessing) or exec (subprocess), behind one interface."""

    def __init__(self, method: str, config_json: str):
        self.method = method
        if method == "fork":
            ctx = mp.get_context("fork")
            self.conn, child = ctx.Pipe()
            self._p = ctx.Process(target=_fork_worker, args=(child, config_json), daemon=True)
            self._p.start()
            child.close()
            self.pid = self._p.pid
        else:
            a, b = socket.socketpair()
            env = dict(os.environ)
            paths = [p for p in sys.path if p and os.path.isdir(p)]
            env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            cmd = [sys.executable, "-c",
                   "import sys; from verifier.batch import _exec_worker; _exec_worker(int(sys.argv[1]))",
                   str(b.fileno())]
            try:
                self._p = subprocess.Popen(cmd, pass_fds=(b.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                           close_fds=True)
            finally:
                b.close()
            self.conn = Connection(a.detach())
            self.pid = self._p.pid
            self.conn.send(config_json)

    @property
    def exitcode(self) -> int | None:
        """Exit code, waiting up to 1 s for a process whose connection just closed to finish exiting."""
        try:
            if self.method == "fork":
                self._p.join(timeout=1)
                return self._p.exitcode
            return self._p.wait(timeout=1)
        except (subprocess.TimeoutExpired, AssertionError, ValueError):
            return None

    def cpu_s(self) -> float | None:
        """User + system CPU seconds of the worker (Linux ``/proc``), None where unavailable."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (OSError, IndexError, ValueError):
            return None

    def kill(self) -> None:
        try:
            self._p.kill()
            if self.method == "fork":
                self._p.join(timeout=5)
            else:
                self._p.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort; the process is gone or unkillable
            pass
        finally:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        try:
            if self.method == "fork":
                self._p.join(timeout=2)
                alive = self._p.is_alive()
            else:
                try:
                    self._p.wait(timeout=2)
                    alive = False
                except subprocess.TimeoutExpired:
                    alive = True
            if alive:
                self.kill()
                return
        finally:
            self.conn.close()


class _Slot:
    """One worker and the chunks it holds; ``chunks[0][0]`` is the item it is running (once ready)."""

    def __init__(self, method: str, config_json: str):
        self.proc = _Proc(method, config_json)
        self.born = time.monotonic()
        self.ready = False
        self.chunks: deque[list[int]] = deque()
        self.read_ahead = False  # the worker has received chunks[0] (a result of it came back)
        self.started: float | None = None  # monotonic time the head item started
        self.cpu_at_start = 0.0  # the worker's CPU seconds when the head item started
        self.last_cpu = 0.0

    @property
    def head(self) -> int | None:
        return self.chunks[0][0] if self.chunks else None

    def pending(self) -> list[int]:
        return [p for c in self.chunks for p in c]

    def can_take(self, big: bool) -> bool:
        if not self.ready:
            return False
        if not self.chunks:
            return True
        return not big and len(self.chunks) == 1 and self.read_ahead

    def give(self, chunk: list[tuple[int, bytes]]) -> None:
        if not self.chunks:
            self.started, self.cpu_at_start = time.monotonic(), self.last_cpu
            self.read_ahead = False
        self.chunks.append([p for p, _ in chunk])
        self.proc.conn.send(chunk)

    def done(self, pos: int, cpu: float) -> None:
        """Result for ``pos`` arrived: the next item (if any) starts now."""
        if not self.chunks or pos not in self.chunks[0]:
            raise ValueError(f"unexpected result for item {pos}")
        self.chunks[0].remove(pos)
        self.read_ahead = True
        if not self.chunks[0]:
            self.chunks.popleft()
            self.read_ahead = False
        self.last_cpu = cpu
        self.started = time.monotonic() if self.chunks else None
        self.cpu_at_start = cpu


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
    """rich progress without its refresh thread (the parent stays single-threaded, so fork stays safe)."""

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
                wall_limit_s: float | None = None) -> list[Verdict]:
    """Verdicts for ``items`` in input order, scored by ``workers`` processes (see the module doc).

    ``start_method``: ``"fork"``, ``"exec"`` or None (fork when the caller is single-threaded, else exec).
    ``wall_limit_s``: wall seconds after an item starts before its worker is killed (default
    ``max(10 * time_budget_s, 30)``)."""
    from verifier.core import wall_backstop_s

    items = list(items)
    n = len(items)
    out: list[Verdict | None] = [None] * n
    blobs: dict[int, bytes] = {}
    for pos, item in enumerate(items):
        kwargs, err = _item_args(item, pos)
        if err:
            pid = str(item.get("problem_id", "")) if isinstance(item, Mapping) else ""
            out[pos] = verifier.failed_verdict("error", err, pid, pos)
        else:
            blobs[pos] = pickle.dumps(kwargs, protocol=pickle.HIGHEST_PROTOCOL)
    if not blobs:
        return out  # type: ignore[return-value]
    budget = verifier.config.time_budget_s
    cpu_limit = budget + max(0.5, 0.5 * budget)
    wall_limit = wall_limit_s if wall_limit_s is not None else wall_backstop_s(budget)
    method = start_method or _auto_method()
    if method not in ("fork", "exec"):
        raise ValueError(f"start_method must be 'fork', 'exec' or None, not {method!r}")
    if method == "fork":
        _preload()
    config_json = verifier.config.model_dump_json()
    n_workers = max(1, min(workers, len(blobs)))
    queue: deque[int] = deque(blobs)
    bar = _Bar(n, progress, description)
    done = n - len(blobs)
    start_failures = 0
    last_start_error = ""
    slots: list[_Slot] = []

    def finish(pos: int, verdict: Verdict) -> None:
        nonlocal done
        if out[pos] is None:
            done += 1
        out[pos] = verdict

    def fail(pos: int, status: str, note: str) -> None:
        it = items[pos]
        finish(pos, verifier.failed_verdict(status, note, it.get("problem_id", ""), _index(it, pos),
                                            it.get("solution") if status == "timeout" else None))

    def next_chunk(s: _Slot) -> list[tuple[int, bytes]] | None:
        if not queue:
            return None
        size = max(1, min(MAX_CHUNK, len(queue) // (2 * len(slots) or 1)))
        big = len(blobs[queue[0]]) > CHUNK_BYTES
        if not s.can_take(big):
            return None
        chunk, nbytes = [], 0
        while queue and len(chunk) < size:
            b = len(blobs[queue[0]])
            if chunk and nbytes + b > CHUNK_BYTES:
                break
            pos = queue.popleft()
            chunk.append((pos, blobs[pos]))
            nbytes += b
        return chunk

    def feed(s: _Slot) -> None:
        while True:
            chunk = next_chunk(s)
            if chunk is None:
                return
            try:
                s.give(chunk)
            except (BrokenPipeError, OSError):
                return  # the worker died; its EOF is handled in the loop

    def retire(s: _Slot, requeue: list[int]) -> None:
        """Kill ``s``, put ``requeue`` back at the front of the queue and start a replacement."""
        nonlocal start_failures, last_start_error
        s.proc.kill()
        queue.extendleft(reversed(requeue))
        i = slots.index(s)
        if start_failures >= MAX_START_FAILURES:
            slots.pop(i)
            return
        try:
            slots[i] = _Slot(method, config_json)
        except OSError as exc:
            start_failures = MAX_START_FAILURES
            last_start_error = f"{type(exc).__name__}: {exc}"
            slots.pop(i)

    try:
        for _ in range(n_workers):
            slots.append(_Slot(method, config_json))
        while slots and (queue or any(s.chunks for s in slots)):
            now = time.monotonic()
            wake = now + 5.0
            for s in slots:
                if not s.ready:
                    wake = min(wake, s.born + STARTUP_LIMIT_S)
                elif s.started is not None:
                    over = s.started + cpu_limit
                    wake = min(wake, s.started + wall_limit, over if now < over else now + POLL_S)
            ready = wait([s.proc.conn for s in slots], timeout=max(0.0, wake - now))
            for s in list(slots):
                if s.proc.conn in ready:
                    try:
                        while s.proc.conn.poll():
                            msg = s.proc.conn.recv()
                            if msg[0] == "ready":
                                s.ready, s.last_cpu = True, float(msg[2])
                                start_failures = 0
                            else:
                                pos, d, cpu = msg
                                s.done(pos, float(cpu))
                                finish(pos, Verdict.model_validate(d))
                    except (EOFError, OSError, ValueError, TypeError) as exc:
                        code = s.proc.exitcode
                        if not s.ready:
                            start_failures += 1
                            last_start_error = f"worker exited during start-up (exit code {code})"
                            retire(s, [])
                            continue
                        pending = s.pending()
                        if pending:
                            why = f"worker died (exit code {code})" if isinstance(exc, EOFError | OSError) \
                                else f"bad message from worker: {exc}"
                            fail(pending[0], "error", why)
                        retire(s, pending[1:])
                        continue
                now = time.monotonic()
                if not s.ready:
                    if now > s.born + STARTUP_LIMIT_S:
                        start_failures += 1
                        last_start_error = f"worker not ready after {STARTUP_LIMIT_S:g} s"
                        retire(s, [])
                    continue
                if s.started is not None and s.head is not None:
                    ran = now - s.started
                    cpu = s.proc.cpu_s() if ran > cpu_limit else None
                    if ran > wall_limit or (cpu is not None and cpu - s.cpu_at_start > cpu_limit):
                        used = f"{cpu - s.cpu_at_start:.1f} s CPU, " if cpu is not None else ""
                        fail(s.head, "timeout", f"exceeded the {budget:g} s budget ({used}{ran:.1f} s wall); "
                                                "worker killed and replaced")
                        retire(s, s.pending()[1:])
                        continue
                feed(s)
            bar.update(done)
        if queue or any(s.chunks for s in slots):  # no worker could be started
            note = f"could not start a verifier worker ({last_start_error or 'unknown reason'})"
            for pos in list(queue) + [p for s in slots for p in s.pending()]:
                fail(pos, "error", note)
        bar.update(done, force=True)
    finally:
        for s in slots:
            if s.chunks:
                s.proc.kill()
            else:
                s.proc.stop()
        bar.stop()
    return out  # type: ignore[return-value]


def _index(item: Mapping, pos: int) -> int:
    try:
        return int(item.get("index", pos))
    except (TypeError, ValueError):
        return pos


def todo_index(items: Sequence[Mapping], pos: int) -> int:
    """Pass-through ``index`` of ``items[pos]`` (its position when absent or not an integer)."""
    return _index(items[pos], pos)
