"""Sampling shards as Prefect tasks mapped over a distributed task runner (prefect-dask).

``sample_distributed(cfg, model_dir, data_dir, out, n_workers=2)`` runs the sample stage with every
missing shard as one Prefect task (:func:`tasks.sample.sample_one_shard`) on a ``DaskTaskRunner``: a
local ``distributed.LocalCluster`` of ``n_workers`` processes by default, or an existing scheduler
(``address="tcp://scheduler:8786"``, e.g. a Dask cluster on Kubernetes). Each shard keeps its own seed,
so the files are identical to those of one worker (tested: ``tests/flows/test_sample_scaleout.py``).
The prompts, the summary and the reference scoring stay in the flow's process (``run_sample``)::

    from flows.sample_scaleout import sample_distributed
    metrics = sample_distributed(cfg, "artifacts/sft/<key>", "artifacts/data/<key>", "out", n_workers=2)

Every worker loads its own engine for each shard it takes (HF model, or a one-shard vLLM worker): use
it where shards are large, or where each worker has its own accelerator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped

from tasks.sample import run_sample, sample_one_shard


@task(name="sample-shard", retries=1, retry_delay_seconds=0)
def sample_shard_task(cfg, model_dir: str, data_dir: str, out: str, i: int) -> int:
    """One shard, generated and committed on a Dask worker; returns its new tokens."""
    return sample_one_shard(cfg, Path(model_dir), Path(data_dir), Path(out), i)


def dask_runner(n_workers: int = 2, address: str | None = None):
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def sample_distributed(cfg, model_dir, data_dir, out, *, n_workers: int = 2, address: str | None = None
                       ) -> dict[str, Any]:
    """The sample stage with its shards mapped over a Dask task runner; returns the stage metrics."""
    model_dir, data_dir, out = str(Path(model_dir).resolve()), str(Path(data_dir).resolve()), str(Path(out).resolve())

    @flow(name="sample-distributed", task_runner=dask_runner(n_workers, address), log_prints=True)
    def _flow() -> dict[str, Any]:
        def map_shards(todo: list[int]) -> None:
            futures = sample_shard_task.map(unmapped(cfg), unmapped(model_dir), unmapped(data_dir), unmapped(out),
                                            todo)
            futures.result()

        m = run_sample(cfg, Path(model_dir), Path(data_dir), Path(out), map_shards=map_shards)
        return {**m, "task_runner": "dask", "dask_workers": n_workers if not address else None}

    return _flow()
