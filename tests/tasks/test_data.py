"""The data stage: loaders on the real shared files, malformed rows, hub errors, run_data's files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conf.schema import DataConfig, DatasetSpec
from tasks.common.records import Problem, iter_jsonl, read_records
from tasks.corpus.loaders import (
    BadRowError,
    DataError,
    boxed_solution,
    gsm8k_answer,
    load_problems,
    metamath_answer,
    normalise_row,
)
from tasks.data import run_data
from verifier.answers import boxed_answers, extract_answer

STRICT = DataConfig()
SKIP = DataConfig(on_bad_row="skip")


def spec(name, fmt, path, **kw) -> DatasetSpec:
    return DatasetSpec(name=name, format=fmt, path=str(path), **kw)


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- extraction -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (r"so $x = \boxed{5}$.", "5"),
    (r"first \boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"nested \boxed{a_{b_{c}}} end", "a_{b_{c}}"),
    (r"\fbox{7}", "7"),
    (r"$\boxed 9$", "9"),
    (r"empty \boxed{}", ""),
    (r"open \boxed{3 and never closed", None),
    ("no box here", None),
])
def test_math_gold_is_the_last_box(text, expected):
    """The data stage reads a MATH gold answer with the verifier's box reader (verifier.answers)."""
    boxes = boxed_answers(text)
    assert (boxes[-1] if boxes else None) == expected


@pytest.mark.parametrize("text, expected", [
    ("a\n#### 72", "72"), ("x #### 1,000 ", "1,000"), ("#### -3\n", "-3"), ("no answer", None), ("#### ", None),
])
def test_gsm8k_answer(text, expected):
    assert gsm8k_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("So 2+2=4.\nThe answer is: 4", "4"), ("The answer is: \\frac{1}{2}\n", "\\frac{1}{2}"),
    ("The answer is 12", "12"), ("no final line", None), ("The answer is: ", None),
])
def test_metamath_answer(text, expected):
    assert metamath_answer(text) == expected


# --- real files -----------------------------------------------------------------------------------------

def test_gsm8k_real_files(shared_data):
    train = load_problems(spec("gsm8k_train", "gsm8k", shared_data / "gsm8k/train.jsonl", split="train"), STRICT)
    test = load_problems(spec("gsm8k_test", "gsm8k", shared_data / "gsm8k/test.jsonl", split="test"), STRICT)
    assert (len(train), len(test)) == (7473, 1319)
    p = train[0]
    assert p.id == "gsm8k_train-0" and p.answer == "72" and p.split == "train" and p.source == "gsm8k"
    # rewritten into the instruction's format (data.solution_format: boxed): no calculator marks, no ####
    assert p.question.startswith("Natalia sold clips")
    assert p.solution == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in "
                          "April and May.\nThe answer is $\\boxed{72}$.")
    assert p.meta == {"n_steps": 2}
    assert test[0].id == "gsm8k_test-0" and test[0].answer == "18"
    assert all(p.answer and "####" not in p.answer for p in train + test)
    assert not any("####" in p.solution or "<<" in p.solution for p in train + test)
    assert all(p.solution.endswith(f"\\boxed{{{p.answer}}}$.") for p in train + test)
    (src,) = load_problems(spec("g", "gsm8k", shared_data / "gsm8k/train.jsonl", limit=1),
                           DataConfig(solution_format="source"))
    assert "<<" in src.solution and src.solution.rstrip().endswith("#### " + src.answer)


def test_math_real_files(shared_data):
    with pytest.raises(BadRowError, match=r"train.jsonl: row \d+ \(line \d+\): field 'solution': no_answer"):
        load_problems(spec("math_train", "math", shared_data / "math/train.jsonl"), STRICT)
    skipped: Counter = Counter()
    train = load_problems(spec("math_train", "math", shared_data / "math/train.jsonl"), SKIP, skipped)
    assert len(train) == 7498 and skipped == {"math_train/no_answer": 2}
    test = load_problems(spec("math_test", "math", shared_data / "math/test.jsonl", split="test"), STRICT)
    m500 = load_problems(spec("math500", "math", shared_data / "math/math500.jsonl", split="test"), STRICT)
    assert (len(test), len(m500)) == (5000, 500)
    # our brace matching agrees with the answer field the data README documents (modulo outer spaces)
    for path, problems in ((shared_data / "math/test.jsonl", test), (shared_data / "math/math500.jsonl", m500)):
        given = {r["unique_id"]: r["answer"].strip() for r in iter_jsonl(path)}
        assert all(given[p.meta["unique_id"]] == p.answer for p in problems)
    assert m500[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert m500[0].meta == {"level": 2, "unique_id": "test/precalculus/807.json", "subject": "Precalculus"}
    assert train[0].meta["level"] == 5 and train[0].meta["subject"] == "Algebra"


def test_limit_keeps_a_seeded_subset_in_order(shared_data):
    s = spec("gsm8k_test", "gsm8k", shared_data / "gsm8k/test.jsonl", limit=25)
    a, b = load_problems(s, STRICT), load_problems(s, STRICT)
    c = load_problems(s, DataConfig(seed=1))
    assert len(a) == 25 and [p.id for p in a] == [p.id for p in b] != [p.id for p in c]
    idx = [int(p.id.rsplit("-", 1)[1]) for p in a]
    assert idx == sorted(idx) and idx != list(range(25))


# --- malformed rows -------------------------------------------------------------------------------------

BAD_GSM8K = [
    {"question": "ok?", "answer": "1+1 = <<1+1=2>>2\n#### 2"},
    "{not json",
    {"answer": "#### 3"},
    {"question": "   ", "answer": "#### 3"},
    {"question": "no final?", "answer": "just text"},
    ["a", "list"],
    {"question": 5, "answer": "#### 5"},
    {"question": "fine", "answer": "#### 7"},
]


@pytest.mark.parametrize("row, field, reason", [
    (1, None, "not_json"), (2, "question", "missing_field"), (3, "question", "empty_field"),
    (4, "answer", "no_answer"), (5, None, "not_object"), (6, "question", "not_text"),
])
def test_bad_row_errors_name_file_row_and_field(tmp_path, row, field, reason):
    path = write_lines(tmp_path / "g.jsonl", [BAD_GSM8K[0]] * row + [BAD_GSM8K[row]])
    with pytest.raises(BadRowError) as e:
        load_problems(spec("g", "gsm8k", path), STRICT)
    msg = str(e.value)
    assert str(path) in msg and f"row {row} (line {row + 1})" in msg and reason in msg
    assert (e.value.field, e.value.reason) == (field, reason)
    if field:
        assert repr(field) in msg


def test_bad_rows_skipped_and_counted(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", BAD_GSM8K)
    skipped: Counter = Counter()
    got = load_problems(spec("g", "gsm8k", path), SKIP, skipped)
    assert [p.id for p in got] == ["g-0", "g-7"] and [p.answer for p in got] == ["2", "7"]
    assert skipped == {"g/not_json": 1, "g/missing_field": 1, "g/empty_field": 1, "g/no_answer": 1,
                       "g/not_object": 1, "g/not_text": 1}


def test_math_and_metamath_bad_rows(tmp_path):
    math = write_lines(tmp_path / "m.jsonl", [{"problem": "p", "solution": r"so \boxed{}"},
                                              {"problem": "q", "solution": "no box"}])
    skipped: Counter = Counter()
    assert load_problems(spec("m", "math", math), SKIP, skipped) == []
    assert skipped == {"m/no_answer": 2}
    with pytest.raises(BadRowError, match=r"row 0 \(line 1\): field 'solution': no_answer \(empty"):
        load_problems(spec("m", "math", math), STRICT)
    mm = write_lines(tmp_path / "mm.jsonl", [
        {"query": "What is 2+2?", "response": "2+2=4\nThe answer is: 4", "type": "GSM_AnsAug"},
        {"query": "What is 3+3?", "response": "It is 6."},
        {"response": "The answer is: 1"},
    ])
    skipped = Counter()
    got = load_problems(spec("mm", "metamathqa", mm), SKIP, skipped)
    assert [(p.id, p.answer, p.meta) for p in got] == [("mm-0", "4", {"type": "GSM_AnsAug"})]
    assert skipped == {"mm/no_answer": 1, "mm/missing_field": 1}


def test_parquet_and_json_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"query": "1+1?", "response": "The answer is: 2"}, {"query": "2+2?", "response": "The answer is: 4"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mm.parquet")
    (tmp_path / "mm.json").write_text(json.dumps(rows))
    for name in ("mm.parquet", "mm.json"):
        assert [p.answer for p in load_problems(spec("mm", "metamathqa", tmp_path / name), STRICT)] == ["2", "4"]
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_problems(spec("x", "gsm8k", tmp_path / "x.csv"), STRICT)
    with pytest.raises(DataError, match="not found"):
        load_problems(spec("x", "gsm8k", tmp_path / "missing.jsonl"), STRICT)


def test_hub_dataset_offline_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    s = DatasetSpec(name="gsm8k_test", format="gsm8k", hub_id="openai/gsm8k", hub_config="main", split="test")
    with pytest.raises(DataError) as e:
        load_problems(s, STRICT)
    msg = str(e.value)
    assert "gsm8k_test" in msg and "'openai/gsm8k'" in msg and "HF_HUB_OFFLINE" in msg and "local 'path'" in msg


def test_synthetic_rows_from_file(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [{"question": "Q?", "answer": "3", "solution": "1+2 = <<1+2=3>>3\n#### 3",
                                               "meta": {"n_steps": 1}}])
    (p,) = load_problems(spec("s", "synthetic", path, split="test"), STRICT)
    assert (p.id, p.answer, p.split, p.source, p.meta) == ("s-0", "3", "test", "synthetic", {"n_steps": 1})


@pytest.mark.parametrize("solution, answer, want", [
    ("3*6 = <<3*6=18>>18 shells.\n#### 18", "18", "3*6 = 18 shells.\nThe answer is $\\boxed{18}$."),
    ("He pays 2*5=$<<2*5=10>>10.\n#### 1,000", "1,000", "He pays 2*5=$10.\nThe answer is $\\boxed{1,000}$."),
    ("Half of 8 is 4.\nThe answer is: 4", "4", "Half of 8 is 4.\nThe answer is $\\boxed{4}$."),
    (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}", r"So $x = \boxed{\frac{1}{2}}$."),  # MATH: as written
    ("#### 5", "5", "The answer is $\\boxed{5}$."),
])
def test_boxed_solution_rewrites_into_the_instruction_format(solution, answer, want):
    assert boxed_solution(solution, answer) == want
    assert extract_answer(boxed_solution(solution, answer)) == extract_answer(f"\\boxed{{{answer}}}")


def test_boxed_format_needs_instructions_that_ask_for_boxed():
    from conf import config_from_dict

    base = {"model": {"build_from_scratch": True}}
    with pytest.raises(ValueError, match=r"sample.instruction.*do not ask for \\boxed"):
        config_from_dict({**base, "sample": {"instruction": "End with #### and the answer."}})
    cfg = config_from_dict({**base, "data": {"solution_format": "source"},
                            "sample": {"instruction": "End with #### and the answer."}})
    assert cfg.data.solution_format == "source"


def test_normalise_row_unknown_format():
    with pytest.raises(DataError, match="unknown dataset format"):
        normalise_row("csv", {}, name="x", index=0, split="train", where="here")


def test_duplicate_dataset_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        DataConfig(sft=[DatasetSpec(name="a", format="synthetic")], eval=[DatasetSpec(name="a", format="synthetic")])


# --- the stage ------------------------------------------------------------------------------------------

def test_run_data_writes_every_file(tmp_path, shared_data):
    from conf import config_from_dict

    cfg = config_from_dict({
        "model": {"build_from_scratch": True},
        "data": {
            "on_bad_row": "skip",
            "synthetic": {"seed": 3, "n_pretrain": 50, "n_sft": 30, "n_pool": 10, "n_test": 12},
            "sft": [{"name": "synthetic_sft", "format": "synthetic", "split": "sft"}],
            "pool": [{"name": "synthetic_pool", "format": "synthetic", "split": "pool"},
                     {"name": "bad", "format": "gsm8k", "path": str(write_lines(tmp_path / "b.jsonl", BAD_GSM8K))}],
            "eval": [{"name": "synthetic_test", "format": "synthetic", "split": "test"},
                     {"name": "math500", "format": "math", "path": str(shared_data / "math/math500.jsonl"),
                      "split": "test", "limit": 20}],
        },
    })
    out = tmp_path / "out"
    out.mkdir()
    m = run_data(cfg, out)
    assert m["rows/sft"] == 30 and m["rows/pool"] == 12 and m["rows/eval/synthetic_test"] == 12
    assert m["rows/eval/math500"] == 20 and m["rows/pretrain"] == 50
    assert m["skipped/bad/not_json"] == 1 and m["skipped_total"] == 6
    sft = read_records(out / "sft.jsonl", Problem)
    assert [p.id for p in sft[:2]] == ["synthetic_sft-0", "synthetic_sft-1"] and sft[0].split == "sft"
    pool = read_records(out / "pool.jsonl", Problem)
    assert {p.id.rsplit("-", 1)[0] for p in pool} == {"synthetic_pool", "bad"}
    assert len(read_records(out / "eval" / "math500.jsonl", Problem)) == 20
    text = (out / "pretrain.txt").read_text()
    assert text.count("<|im_start|>assistant\n") == 50 and text.count("<|endoftext|>") == 49
    test_q = {p.question for p in read_records(out / "eval" / "synthetic_test.jsonl", Problem)}
    assert not any(q in text for q in test_q)
    assert not (out / "pretrain.txt.tmp").exists()


def test_a_pinned_pretraining_seed_writes_the_same_corpus_for_every_data_seed(tmp_path):
    """data.synthetic.pretrain_seed: pretrain.txt (problems and the separators drawn for them) is byte for byte
    the pinned seed's own, while the SFT and test files follow data.synthetic.seed."""
    from conf import config_from_dict

    def files(seed: int, pretrain_seed: int | None) -> dict[str, bytes]:
        cfg = config_from_dict({"model": {"build_from_scratch": True}, "data": {
            "synthetic": {"seed": seed, "pretrain_seed": pretrain_seed, "n_pretrain": 40, "n_sft": 10, "n_pool": 0,
                          "n_test": 10},
            "sft": [{"name": "synthetic_sft", "format": "synthetic", "split": "sft"}], "pool": [],
            "eval": [{"name": "synthetic_test", "format": "synthetic", "split": "test"}]}})
        out = tmp_path / f"{seed}-{pretrain_seed}"
        out.mkdir()
        run_data(cfg, out)
        return {f: (out / f).read_bytes() for f in ("pretrain.txt", "sft.jsonl", "eval/synthetic_test.jsonl")}

    own, other, pinned = files(3, None), files(4, None), files(4, 3)
    assert pinned["pretrain.txt"] == own["pretrain.txt"] != other["pretrain.txt"]
    assert pinned["sft.jsonl"] == other["sft.jsonl"] != own["sft.jsonl"]
    assert pinned["eval/synthetic_test.jsonl"] == other["eval/synthetic_test.jsonl"]


def _pool_cfg(tmp_path, **validation):
    from conf import config_from_dict

    gsm = write_lines(tmp_path / "g.jsonl", [{"question": f"Q{i}?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
                                             for i in range(6)])
    return config_from_dict({
        "model": {"build_from_scratch": True},
        "data": {
            "synthetic": {"seed": 3, "n_pretrain": 0, "n_sft": 5, "n_pool": 10, "n_test": 8},
            "sft": [{"name": "synthetic_sft", "format": "synthetic", "split": "sft"}],
            "pool": [{"name": "synthetic_pool", "format": "synthetic", "split": "pool"},
                     {"name": "g", "format": "gsm8k", "path": str(gsm)}],
            "eval": [{"name": "synthetic_test", "format": "synthetic", "split": "test"}],
            "validation": validation,
        },
    })


def test_validation_split_is_held_out_of_the_pool(tmp_path):
    """data.validation.n pool problems leave pool.jsonl (so sampling and DPO never see them) and become one
    evaluation set per source, drawn by seed; the test set does not change."""
    runs = {}
    for tag, validation in (("none", {}), ("a", {"n": 6, "seed": 1}), ("b", {"n": 6, "seed": 1}),
                            ("c", {"n": 6, "seed": 2})):
        out = tmp_path / tag
        out.mkdir()
        m = run_data(_pool_cfg(tmp_path, **validation), out)
        held = {f.stem: read_records(f, Problem) for f in sorted((out / "eval").glob("*_validation.jsonl"))}
        runs[tag] = (m, read_records(out / "pool.jsonl", Problem), held,
                     read_records(out / "eval" / "synthetic_test.jsonl", Problem))
    full = {p.id for p in runs["none"][1]}
    m, pool, held, test = runs["a"]
    held_ids = [p.id for rows in held.values() for p in rows]
    assert len(full) == 16 and m["rows/pool"] == 10 and len(held_ids) == 6
    assert set(held_ids).isdisjoint(p.id for p in pool) and set(held_ids) | {p.id for p in pool} == full
    assert all(name == f"{rows[0].source}_validation" and {p.source for p in rows} == {rows[0].source}
               and {p.split for p in rows} == {"validation"} for name, rows in held.items())
    assert sum(m[f"rows/eval/{name}"] for name in held) == 6
    assert [p.id for p in test] == [p.id for p in runs["none"][3]]  # the test set is untouched
    assert runs["b"][2] == held and sorted(p.id for r in runs["c"][2].values() for p in r) != sorted(held_ids)
    assert not runs["none"][2]


def test_validation_split_errors(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(DataError, match=r"data.validation.n=16 must be smaller than the pool \(16 problems\)"):
        run_data(_pool_cfg(tmp_path, n=16), out)
    with pytest.raises(DataError, match="collide with data.eval names"):
        run_data(_pool_cfg(tmp_path, n=15, name="test"), out)
