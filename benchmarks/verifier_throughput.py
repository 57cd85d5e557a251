"""Verifier throughput: solutions/s and p50/p99 latency, full MathVerifier vs math-verify's answer-only check.

Inputs: GSM8K test reference answers (GSM8K-style) and MATH-500 reference solutions (MATH-style) from
``../shared/data``. Full scoring runs through ``MathVerifier.score_batch`` with N worker processes (worker
start-up included; latency = per-item wall and CPU time measured inside a worker); ``MathVerifier.score`` in
one process and math-verify's answer-only check (``verify(parse(gold), parse(solution))``) run on the same
inputs. The machine is shared, so the load average is printed and, next to the wall-clock rate, the
capacity the workers' CPU time implies: ``workers x items / worker CPU-seconds`` (what N idle cores
would give). ``score_batch`` runs ``--repeat`` times per input set, each with fresh workers forked from a parent
that scores nothing itself (no cache carries over from one run to the next), and the table shows the median
with the range: on a shared virtual machine one run's rate moves by +-15%. Usage::

    python benchmarks/verifier_throughput.py [--data ../shared/data] [--n 1000] [--workers 2] [--repeat 3]
    python benchmarks/verifier_throughput.py --false-flags [--n 500] [--seed 0]

``--false-flags`` instead scores a seeded sample of correct reference solutions from the TRAIN splits
(MATH ``solution``, GSM8K ``answer``) and prints the share with any dimension except answer_correctness
above 0, with each process dimension above 0 separately, and with a first erroneous step (either channel).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

from conf.schema import VerifyConfig
from verifier import MathVerifier


def load(data: Path, n: int) -> dict[str, list[dict]]:
    rows = [json.loads(x) for x in (data / "gsm8k" / "test.jsonl").read_text().splitlines() if x.strip()]
    gsm = [{"question": r["question"], "solution": r["answer"], "gold": r["answer"].split("####")[-1].strip()}
           for r in rows[:n]]
    rows = [json.loads(x) for x in (data / "math" / "math500.jsonl").read_text().splitlines() if x.strip()]
    mth = [{"question": r["problem"], "solution": r["solution"], "gold": r["answer"]} for r in rows[:n]]
    return {"GSM8K-style": gsm, "MATH-style": mth}


def _timed_worker(args):
    config_json, items = args
    v = MathVerifier(VerifyConfig.model_validate_json(config_json)).warm_up()  # model loads are not latency
    v.score(**items[0])  # warm-up (imports)
    lat, cpu = [], []
    for it in items:
        t, c = time.perf_counter(), time.thread_time()
        v.score(**it)
        lat.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return lat, cpu


def full(items: list[dict], workers: int, repeat: int = 1) -> dict:
    """Throughput of score_batch (and the capacity its workers' CPU time implies), each the median of
    ``repeat`` runs (``rates``: every run's), and in-worker latencies."""
    v = MathVerifier()
    v.score_batch(items[:4], workers=workers, progress=False)  # parent-side imports, once per process
    rates, capacities = [], []
    for _ in range(max(1, repeat)):
        t, c0 = time.perf_counter(), os.times()
        out = v.score_batch(items, workers=workers, progress=False)
        wall, c1 = time.perf_counter() - t, os.times()
        assert len(out) == len(items) and all(o.status == "ok" for o in out), "timeouts/errors in the benchmark"
        child_cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        rates.append(len(items) / wall)
        capacities.append(workers * len(items) / child_cpu if child_cpu else None)
    chunks = [items[i::workers] for i in range(workers)]
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_timed_worker, [(v.config.model_dump_json(), c) for c in chunks])
    known = [c for c in capacities if c is not None]
    return {"rate": statistics.median(rates), "rates": rates,
            "capacity": statistics.median(known) if known else None,
            "lat": [x for p in parts for x in p[0]], "cpu": [x for p in parts for x in p[1]]}


def single(items: list[dict]) -> tuple[float, list[float]]:
    v = MathVerifier().warm_up()
    v.score(**items[0])
    lats = []
    t0 = time.perf_counter()
    for it in items:
        t = time.perf_counter()
        v.score(**it)
        lats.append(time.perf_counter() - t)
    return len(items) / (time.perf_counter() - t0), lats


def answer_only(items: list[dict]) -> tuple[float, list[float]]:
    from math_verify import parse, verify

    verify(parse("1"), parse("1"))
    lats = []
    t0 = time.perf_counter()
    for it in items:
        t = time.perf_counter()
        verify(parse(it["gold"]), parse(it["solution"]))
        lats.append(time.perf_counter() - t)
    return len(items) / (time.perf_counter() - t0), lats


def _autogroup() -> str:
    """Linux CFS autogroup: all processes of one session share one CPU share, so on a loaded machine
    extra workers add no wall-clock throughput (the capacity column shows what idle cores would give)."""
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
            return f"; CFS autogroup on ({Path('/proc/self/autogroup').read_text().strip()})"
    except OSError:
        pass
    return ""


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def false_flags(data: Path, n: int, seed: int) -> None:
    """False-flag rates on correct reference solutions (train splits only: development data)."""
    import random

    v = MathVerifier()
    print("| reference solutions (train) | n | any flag | logical_consistency | semantic_alignment "
          "| symbolic_validity | step_ordering | structural_integrity | first error located |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, path, q, s, g in (("MATH", "math/train.jsonl", "problem", "solution", "answer"),
                                ("GSM8K", "gsm8k/train.jsonl", "question", "answer", None)):
        rows = [json.loads(x) for x in (data / path).read_text().splitlines() if x.strip()]
        rows = random.Random(seed).sample(rows, min(n, len(rows)))
        counts = dict.fromkeys(("any", "logical_consistency", "semantic_alignment", "symbolic_validity",
                                "step_ordering", "structural_integrity", "first_error"), 0)
        for r in rows:
            gold = r[g] if g else r[s].split("####")[-1].strip()
            verdict = v.score(r[q], r[s], gold)
            d = verdict.dims
            counts["any"] += any(x > 0 for k, x in d.items() if k != "answer_correctness")
            counts["first_error"] += verdict.first_error_step is not None
            for k in counts:
                if k not in ("any", "first_error"):
                    counts[k] += d[k] > 0
        print(f"| {name} | {len(rows)} | " + " | ".join(f"{100 * c / len(rows):.1f}%" for c in counts.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="score_batch runs per input set (the median is shown)")
    ap.add_argument("--false-flags", action="store_true", help="false-flag rates on train references instead")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.false_flags:
        false_flags(Path(a.data), a.n, a.seed)
        return
    sets = load(Path(a.data), a.n)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"on {os.cpu_count()} CPUs{_autogroup()}\n")
    print("| inputs | n | method | solutions/s (wall) | capacity on idle cores (CPU-time) "
          "| p50 ms | p99 ms | p50 / p99 CPU ms |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, items in sets.items():
        r = full(items, a.workers, a.repeat)
        rates = r["rates"]
        runs = f" (median of {len(rates)}: {min(rates):.0f}-{max(rates):.0f})" if len(rates) > 1 else ""
        print(f"| {name} | {len(items)} | MathVerifier.score_batch ({a.workers} workers) | {r['rate']:.0f}{runs} "
              f"| {r['capacity']:.0f} | {pct(r['lat'], .5):.2f} | {pct(r['lat'], .99):.2f} "
              f"| {pct(r['cpu'], .5):.2f} / {pct(r['cpu'], .99):.2f} |")
        rate, lat = single(items)
        print(f"| {name} | {len(items)} | MathVerifier.score (1 process) | {rate:.0f} | | {pct(lat, .5):.2f} "
              f"| {pct(lat, .99):.2f} | |")
        rate, lat = answer_only(items)
        print(f"| {name} | {len(items)} | math-verify answer only (1 process) | {rate:.0f} | | "
              f"{pct(lat, .5):.2f} | {pct(lat, .99):.2f} | |")
    la = os.getloadavg()
    print(f"\nload average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


if __name__ == "__main__":
    main()
