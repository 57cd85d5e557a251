"""score_batch: input order, pass-through ids, bad rows, stuck and crashed workers replaced, slow starts tolerated,
and the small parts: the outcome of a failed item, the per-item CPU limit."""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from pebble import ProcessExpired

from conf.schema import VerifyConfig
from verifier import MathVerifier
from verifier import batch as batch_mod
from verifier import core as core_mod

Q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many in all?"
GOOD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
BAD = "Natalia sold 48/2 = 26 clips in May.\nShe sold 48+26 = 74 clips.\n#### 74"


def test_batch_matches_score_and_keeps_order():
    v = MathVerifier()
    items = [{"problem_id": f"p{i}", "index": i, "question": Q, "solution": GOOD if i % 2 else BAD, "gold": "72"}
             for i in range(12)]
    items.append({"question": Q, "solution": GOOD.split("\n"), "gold": "72", "reference": GOOD})
    out = v.score_batch(items, workers=2, progress=False)
    assert [o.problem_id for o in out[:12]] == [f"p{i}" for i in range(12)]
    assert [o.index for o in out] == list(range(13))
    assert [o.correct for o in out[:12]] == [bool(i % 2) for i in range(12)]
    assert out[0] == v.score(Q, BAD, "72", problem_id="p0", index=0)
    assert out[12].correct and out[12].steps == GOOD.split("\n")


def test_bad_rows_become_error_verdicts():
    out = MathVerifier().score_batch([{"question": Q, "gold": "72"}, "not a mapping", {"question": Q,
                                      "solution": GOOD, "gold": "72"}], workers=1, progress=False)
    assert out[0].status == "error" and "solution" in out[0].notes[0]
    assert out[1].status == "error"
    assert out[2].status == "ok" and out[2].correct


def test_stuck_worker_is_killed_and_replaced(monkeypatch):
    real = core_mod.MathVerifier.analyze

    def analyze(self, question, solution, gold, reference=None, budget=None):
        if solution == "STALL":
            time.sleep(60)  # blocks without using CPU: only the parent's wall-clock backstop can end it
        return real(self, question, solution, gold, reference, budget)

    monkeypatch.setattr(core_mod.MathVerifier, "analyze", analyze)
    v = MathVerifier(VerifyConfig(time_budget_s=0.5))
    items = [{"question": Q, "solution": s, "gold": "72"} for s in (GOOD, "STALL", GOOD, BAD, GOOD)]
    t0 = time.perf_counter()
    out = batch_mod.score_batch(v, items, workers=2, progress=False, start_method="fork", wall_limit_s=3.0)
    assert time.perf_counter() - t0 < 20
    assert [o.status for o in out] == ["ok", "timeout", "ok", "ok", "ok"]
    assert [o.correct for o in out] == [True, False, True, False, True]
    assert "worker killed" in out[1].notes[0]


def test_cpu_bound_stall_that_ignores_signals_is_killed(monkeypatch):
    real = core_mod.MathVerifier.analyze

    def analyze(self, question, solution, gold, reference=None, budget=None):
        if solution == "SPIN":
            sum(range(10**13))  # C loop: the in-worker timer signal cannot interrupt it; the parent's CPU watch can
        return real(self, question, solution, gold, reference, budget)

    monkeypatch.setattr(core_mod.MathVerifier, "analyze", analyze)
    v = MathVerifier(VerifyConfig(time_budget_s=0.5))
    items = [{"question": Q, "solution": s, "gold": "72"} for s in (GOOD, "SPIN", BAD)]
    out = batch_mod.score_batch(v, items, workers=1, progress=False, start_method="fork", wall_limit_s=60)
    assert [o.status for o in out] == ["ok", "timeout", "ok"]
    assert "CPU" in out[1].notes[0]


def test_slow_worker_start_does_not_time_items_out(monkeypatch):
    """Workers that take longer to start than the budget (imports on a loaded machine) time nothing out."""
    monkeypatch.setenv(batch_mod.INIT_DELAY_ENV, "3.0")
    v = MathVerifier(VerifyConfig(time_budget_s=0.3))
    items = [{"problem_id": f"p{i}", "question": Q, "solution": GOOD if i % 2 else BAD, "gold": "72"}
             for i in range(24)]
    out = batch_mod.score_batch(v, items, workers=2, progress=False, start_method="fork")
    assert [o.status for o in out] == ["ok"] * 24
    assert [o.correct for o in out] == [bool(i % 2) for i in range(24)]


def test_exec_workers_do_not_rerun_an_unguarded_main(tmp_path):
    """A script without a __main__ guard, calling score_batch from a thread (as a Prefect task does): the
    workers are fresh interpreters that import only verifier, so the script's body runs exactly once."""
    log = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import threading
        from verifier import MathVerifier
        with open({str(log)!r}, "a") as f:
            f.write("run\\n")
        items = [{{"question": {Q!r}, "solution": {GOOD!r}, "gold": "72", "index": i}} for i in range(6)]
        res = []
        t = threading.Thread(target=lambda: res.extend(MathVerifier().score_batch(items, workers=2, progress=False)))
        t.start()
        t.join()
        print("STATUS", [r.status for r in res], [r.correct for r in res], [r.index for r in res])
    """))
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert log.read_text().splitlines() == ["run"]
    assert f"STATUS {['ok'] * 6} {[True] * 6} {list(range(6))}" in p.stdout


def test_worker_that_cannot_start_gives_error_verdicts(monkeypatch):
    monkeypatch.setattr(batch_mod, "MAX_START_FAILURES", 2)
    monkeypatch.setattr(batch_mod, "_init_worker", lambda config_json: sys.exit(3))
    out = batch_mod.score_batch(MathVerifier(), [{"question": Q, "solution": GOOD, "gold": "72"}] * 3,
                                workers=2, progress=False, start_method="fork")
    assert [o.status for o in out] == ["error"] * 3
    assert "could not start a verifier worker" in out[0].notes[0]


def test_worker_that_fails_its_first_start_is_replaced(monkeypatch, tmp_path):
    """The first worker start fails (its pool may break); a replacement starts and scores everything."""
    real, marker = batch_mod._init_worker, tmp_path / "failed-once"

    def init(config_json):
        if not marker.exists():
            marker.touch()
            sys.exit(3)
        real(config_json)

    monkeypatch.setattr(batch_mod, "_init_worker", init)
    items = [{"question": Q, "solution": GOOD if i % 2 else BAD, "gold": "72", "index": i} for i in range(6)]
    out = batch_mod.score_batch(MathVerifier(), items, workers=1, progress=False, start_method="fork")
    assert marker.exists()
    assert [o.status for o in out] == ["ok"] * 6
    assert [o.correct for o in out] == [bool(i % 2) for i in range(6)]


def test_crashed_worker_is_replaced_and_order_kept(monkeypatch):
    """A worker that dies mid-item gives that item an error verdict; a fresh worker scores the rest, and
    verdicts come back in input order although a slow first item finishes last."""
    real = core_mod.MathVerifier.analyze

    def analyze(self, question, solution, gold, reference=None, budget=None):
        if solution == "CRASH":
            os._exit(9)
        if solution == "SLOW":
            time.sleep(1.5)  # no CPU: within the budget, but done after the items behind it
            solution = GOOD
        return real(self, question, solution, gold, reference, budget)

    monkeypatch.setattr(core_mod.MathVerifier, "analyze", analyze)
    sols = ["SLOW", GOOD, "CRASH", BAD, GOOD, "CRASH", BAD]
    items = [{"problem_id": f"p{i}", "index": 10 + i, "question": Q, "solution": s, "gold": "72"}
             for i, s in enumerate(sols)]
    out = batch_mod.score_batch(MathVerifier(), items, workers=2, progress=False, start_method="fork")
    assert [o.problem_id for o in out] == [f"p{i}" for i in range(7)]
    assert [o.index for o in out] == [10 + i for i in range(7)]
    assert [o.status for o in out] == ["ok", "ok", "error", "ok", "ok", "error", "ok"]
    assert [o.correct for o in out] == [True, True, False, False, True, False, False]
    assert out[2].notes == ["worker died (exit code 9)"]


def _failed(exc: BaseException) -> Future:
    fut: Future = Future()
    fut.set_exception(exc)
    return fut


def test_outcomes_of_failed_items():
    limits = batch_mod.Limits.of(2.0)
    assert limits == (2.0, 3.0, 30.0) and batch_mod.Limits.of(0.5, 4.0) == (0.5, 1.0, 4.0)
    status, note = batch_mod._outcome(_failed(TimeoutError("Task timeout", 30.0)), limits)
    assert status == "timeout" and "30.0 s wall" in note and "worker killed" in note
    status, note = batch_mod._outcome(_failed(ProcessExpired("x", code=-signal.SIGXCPU)), limits)
    assert status == "timeout" and "3.0 s CPU" in note
    assert batch_mod._outcome(_failed(ProcessExpired("x", code=-9)), limits) == ("error", "worker died (exit code -9)")
    assert batch_mod._outcome(_failed(BrokenProcessPool("All workers expired")), limits) is None
    assert batch_mod._outcome(_failed(ValueError("bad")), limits) == ("error", "ValueError: bad")
    ok: Future = Future()
    ok.set_result({"a": 1})
    assert batch_mod._outcome(ok, limits) == ("ok", {"a": 1})


class _Pool:
    def __init__(self, active: bool):
        self.active = active


def test_as_completed_stops_when_the_pool_broke_or_nothing_runs(monkeypatch):
    """A broken pebble pool leaves the items it never dispatched pending: the wait must end anyway."""
    monkeypatch.setattr(batch_mod, "STARTUP_LIMIT_S", 1.0)
    done, pending = Future(), Future()
    done.set_result(1)
    t0 = time.perf_counter()
    assert list(batch_mod._as_completed({done: 0, pending: 1}, _Pool(active=False))) == [done]
    assert time.perf_counter() - t0 < 0.9  # at the first poll, not after STARTUP_LIMIT_S
    assert list(batch_mod._as_completed({done: 0, pending: 1}, _Pool(active=True))) == [done]
    assert time.perf_counter() - t0 > 1.0  # alive but nothing ran for STARTUP_LIMIT_S
    slow = Future()
    slow.set_running_or_notify_cancel()  # a running item keeps the wait going past STARTUP_LIMIT_S
    threading.Timer(1.6, slow.set_result, (2,)).start()
    assert list(batch_mod._as_completed({slow: 0, done: 1}, _Pool(active=True))) == [done, slow]


def test_cpu_limit_is_set_for_the_item_and_restored():
    before = resource.getrlimit(resource.RLIMIT_CPU)
    with batch_mod._cpu_limit(1.5):
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        used = time.process_time()
    assert hard == before[1] and used + 0.5 < soft <= math.ceil(used + 1.5)
    assert resource.getrlimit(resource.RLIMIT_CPU) == before


@pytest.mark.parametrize("workers", [1, 3])
def test_worker_counts(workers):
    items = [{"question": Q, "solution": GOOD, "gold": "72"}] * 4
    assert all(o.correct for o in MathVerifier().score_batch(items, workers=workers, progress=False))


def test_chunks_give_the_verdicts_of_single_items():
    v = MathVerifier()
    items = [{"problem_id": f"p{i}", "index": i, "question": Q, "solution": GOOD if i % 3 else BAD, "gold": "72"}
             for i in range(11)]
    single = batch_mod.score_batch(v, items, workers=2, progress=False, start_method="fork", chunk_size=1)
    for size in (4, 16):
        assert batch_mod.score_batch(v, items, workers=2, progress=False, start_method="fork",
                                     chunk_size=size) == single
    with pytest.raises(ValueError, match="chunk_size"):
        batch_mod.score_batch(v, items, progress=False, chunk_size=0)


def test_auto_chunk_size_keeps_eight_tasks_per_worker():
    assert batch_mod.auto_chunk_size(5, 2) == 1
    assert batch_mod.auto_chunk_size(160, 2) == 10
    assert batch_mod.auto_chunk_size(100_000, 2) == batch_mod.MAX_CHUNK
    assert batch_mod.auto_chunk_size(3, 0) == 1


def test_a_chunk_whose_worker_is_killed_is_rescored_item_by_item(monkeypatch):
    """A stalled item and a crashing one, each inside a chunk: the chunk's worker is killed (wall backstop) or
    dies, its items are scored again one per task, and only the culprits get timeout / error verdicts."""
    real = core_mod.MathVerifier.analyze

    def analyze(self, question, solution, gold, reference=None, budget=None):
        if solution == "STALL":
            time.sleep(60)
        if solution == "CRASH":
            os._exit(9)
        if solution == "RAISE":
            raise RuntimeError("boom")
        return real(self, question, solution, gold, reference, budget)

    monkeypatch.setattr(core_mod.MathVerifier, "analyze", analyze)
    sols = [GOOD, "STALL", BAD, GOOD, BAD, "CRASH", GOOD, "RAISE", GOOD]
    items = [{"problem_id": f"p{i}", "question": Q, "solution": s, "gold": "72"} for i, s in enumerate(sols)]
    t0 = time.perf_counter()
    out = batch_mod.score_batch(MathVerifier(VerifyConfig(time_budget_s=0.5)), items, workers=2, progress=False,
                                start_method="fork", wall_limit_s=3.0, chunk_size=3)
    assert time.perf_counter() - t0 < 30
    assert [o.problem_id for o in out] == [f"p{i}" for i in range(9)]
    assert [o.status for o in out] == ["ok", "timeout", "ok", "ok", "ok", "error", "ok", "error", "ok"]
    assert [o.correct for o in out if o.status == "ok"] == [True, False, True, False, True, True]
    assert "worker killed" in out[1].notes[0]
    assert out[5].notes == ["worker died (exit code 9)"]
    assert out[7].notes == ["RuntimeError: boom"]


def test_pebble_polls_fast_only_while_a_pool_of_ours_lives():
    """pool.join() waits for pebble's sleeping manager thread: 10 ms polls inside, pebble's own setting after."""
    from verifier.batch import PEBBLE_CONSTS, PEBBLE_POLL_S, _pebble_polls

    before = PEBBLE_CONSTS.sleep_unit
    with _pebble_polls(PEBBLE_POLL_S):
        assert PEBBLE_CONSTS.sleep_unit == min(before, PEBBLE_POLL_S)
    assert PEBBLE_CONSTS.sleep_unit == before
