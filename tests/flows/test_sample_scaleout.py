"""Sampling shards as Prefect tasks on a local Dask cluster: the same files as one worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from conf.schema import Config, ModelConfig, SampleConfig
from tasks.common.records import Problem, iter_jsonl, write_jsonl
from training.modelref import write_model_ref

pytest.importorskip("prefect_dask")


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "samples").glob("shard-*.jsonl")) for r in iter_jsonl(f)]


@pytest.mark.slow
def test_two_dask_workers_write_what_one_writes(tiny_model_dir, tmp_path, prefect_api):
    from flows.sample_scaleout import sample_distributed

    model_dir, data_dir = tmp_path / "sft", tmp_path / "data"
    model_dir.mkdir()
    write_model_ref(model_dir, base=str(tiny_model_dir))
    write_jsonl(data_dir / "pool.jsonl", [Problem(id=f"p-{i}", question=f"What is {i} + {i + 2}?", answer="1",
                                                  source="t", split="pool") for i in range(6)])
    cfg = Config(model=ModelConfig(build_from_scratch=True),
                 sample=SampleConfig(engine="hf", k=2, temperature=1.0, max_tokens=6, shard_size=2, batch_size=2,
                                     seed=11, score_references=False))
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"out-{n}"
        out.mkdir()
        m = sample_distributed(cfg, model_dir, data_dir, out, n_workers=n)
        assert m["shards"] == 3 and m["shards_by_task_runner"] == 3 and m["samples"] == 12
        outs[n] = _rows(out)
    assert outs[1] == outs[2] and len(outs[1]) == 12
