"""The artifact store: content keys, manifests, atomic completion, resume folders, model refs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.common.artifacts import MANIFEST, Manifest, build_stage, find_complete, stage_key
from tasks.common.records import Problem, iter_jsonl, read_records, write_jsonl
from training.modelref import read_model_ref, write_model_ref


def _writer(rows: int, calls: list[int]):
    def fn(work: Path) -> dict:
        calls.append(1)
        write_jsonl(work / "rows.jsonl", ({"i": i} for i in range(rows)))
        return {"rows": rows}

    return fn


def test_key_depends_on_config_inputs_and_version() -> None:
    k = stage_key("dpo", {"beta": 0.1}, {"pairs": "abc"}, "1")
    assert k == stage_key("dpo", {"beta": 0.1}, {"pairs": "abc"}, "1")
    assert k != stage_key("dpo", {"beta": 0.2}, {"pairs": "abc"}, "1")
    assert k != stage_key("dpo", {"beta": 0.1}, {"pairs": "abd"}, "1")
    assert k != stage_key("dpo", {"beta": 0.1}, {"pairs": "abc"}, "2")


def test_build_then_cached(tmp_path: Path) -> None:
    calls: list[int] = []
    m1 = build_stage(tmp_path, "data", "1", {"n": 3}, {}, _writer(3, calls))
    assert not m1.cached and m1.metrics == {"rows": 3}
    assert m1.files["rows.jsonl"]["rows"] == 3
    assert len(m1.files["rows.jsonl"]["sha256"]) == 64
    saved = json.loads((m1.path / MANIFEST).read_text())
    assert saved["stage"] == "data" and saved["key"] == m1.key and saved["code_version"] == "1"
    m2 = build_stage(tmp_path, "data", "1", {"n": 3}, {}, _writer(3, calls))
    assert m2.cached and m2.key == m1.key and len(calls) == 1
    down = build_stage(tmp_path, "verify", "1", {}, {"data": m2}, _writer(1, calls))
    assert down.inputs == {"data": m1.key}


def test_failed_stage_leaves_nothing_complete(tmp_path: Path) -> None:
    def boom(work: Path) -> dict:
        (work / "half.jsonl").write_text('{"a": 1}\n')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_stage(tmp_path, "sample", "1", {}, {}, boom)
    assert not list((tmp_path / "sample").glob(f"*/{MANIFEST}"))
    assert not [p for p in (tmp_path / "sample").iterdir() if not p.name.startswith(".tmp")]
    # the retry builds it
    calls: list[int] = []
    m = build_stage(tmp_path, "sample", "1", {}, {}, _writer(2, calls))
    assert find_complete(tmp_path, "sample", m.key) is not None


def test_resume_dir_keeps_partial_work(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def flaky(work: Path) -> dict:
        seen.append(sorted(p.name for p in work.iterdir()))
        if not (work / "shard-0.jsonl").exists():
            (work / "shard-0.jsonl").write_text("{}\n")
            raise RuntimeError("killed after shard 0")
        (work / "shard-1.jsonl").write_text("{}\n")
        return {}

    with pytest.raises(RuntimeError):
        build_stage(tmp_path, "sample", "1", {}, {}, flaky, resume_dir=True)
    m = build_stage(tmp_path, "sample", "1", {}, {}, flaky, resume_dir=True)
    assert seen == [[], ["shard-0.jsonl"]]
    assert set(m.files) == {"shard-0.jsonl", "shard-1.jsonl"}
    assert Manifest.load(m.path).key == m.key


def test_jsonl_round_trip_and_non_finite(tmp_path: Path) -> None:
    p = Problem(id="g-0", question="q?", answer="3", source="gsm8k", split="test")
    write_jsonl(tmp_path / "p.jsonl", [p])
    assert read_records(tmp_path / "p.jsonl", Problem) == [p]
    write_jsonl(tmp_path / "x.jsonl", [{"v": float("nan")}, {"v": float("inf")}])
    assert [r["v"] for r in iter_jsonl(tmp_path / "x.jsonl")] == [None, None]


def test_model_ref_paths_survive_a_move(tmp_path: Path) -> None:
    root = tmp_path / "a"
    (root / "base" / "k1" / "model").mkdir(parents=True)
    sft = root / "sft" / ".tmp-k2"
    (sft / "adapter").mkdir(parents=True)
    write_model_ref(sft, base=str(root / "base/k1/model"), adapter=sft / "adapter")
    sft.rename(root / "sft" / "k2")
    moved = tmp_path / "b"
    root.rename(moved)
    ref = read_model_ref(moved / "sft" / "k2")
    assert ref.base == str((moved / "base/k1/model").resolve())
    assert ref.adapter == str((moved / "sft/k2/adapter").resolve())
    hub = tmp_path / "hub"
    hub.mkdir()
    write_model_ref(hub, base="Qwen/Qwen2.5-1.5B-Instruct")
    assert read_model_ref(hub).base == "Qwen/Qwen2.5-1.5B-Instruct"
