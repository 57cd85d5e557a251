"""The paper profile's hub data paths, proven offline.

``HUB_CARDS`` writes down what the dataset cards on the Hugging Face Hub say (configs, splits, row
fields). The tests check every hub dataset in ``conf/paper.yaml`` against it, then run the data
loader on rows shaped exactly like each dataset's rows (read from local files through a stand-in for
``datasets.load_dataset`` that only answers the ids/configs/splits of the cards).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conf.loader import load_config
from conf.schema import DataConfig, DatasetSpec
from tasks.corpus.loaders import DataError, load_problems

ROOT = Path(__file__).resolve().parents[2]
MATH_SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus"]

# What each dataset card lists (fields: every column of a row, as the hub's viewer shows them).
HUB_CARDS = {
    "openai/gsm8k": {"configs": ["main", "socratic"], "splits": ["train", "test"],
                     "fields": {"question": str, "answer": str}},
    "meta-math/MetaMathQA": {"configs": [None], "splits": ["train"],
                             "fields": {"type": str, "query": str, "original_question": str, "response": str}},
    "HuggingFaceH4/MATH-500": {"configs": [None], "splits": ["test"],
                               "fields": {"problem": str, "solution": str, "answer": str, "subject": str,
                                          "level": int, "unique_id": str}},
    "EleutherAI/hendrycks_math": {"configs": MATH_SUBJECTS, "splits": ["train", "test"],
                                  "fields": {"problem": str, "level": str, "type": str, "solution": str}},
}
# The fields each loader format reads (tasks/corpus/loaders.py: normalise_row).
FORMAT_FIELDS = {"gsm8k": {"question", "answer"}, "metamathqa": {"query", "response"},
                 "math": {"problem", "solution"}}

# One row of each dataset, shaped like the hub's rows.
ROWS = {
    "openai/gsm8k": {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                                 "clips in May. How many clips did Natalia sell altogether in April and May?",
                     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
                               "clips altogether in April and May.\n#### 72"},
    "meta-math/MetaMathQA": {"type": "MATH_AnsAug", "query": "What is $2+3$?", "original_question": "What is $2+3$?",
                             "response": "We add: $2+3=5$.\nThe answer is: 5"},
    "HuggingFaceH4/MATH-500": {"problem": "Compute $\\dbinom{5}{2}$.", "solution": "$\\dbinom{5}{2}=\\boxed{10}$.",
                               "answer": "10", "subject": "Counting & Probability", "level": 2,
                               "unique_id": "test/counting_and_probability/1.json"},
    "EleutherAI/hendrycks_math": {"problem": "Solve $x+1=3$.", "level": "Level 1", "type": "Algebra",
                                  "solution": "Subtract 1: $x=\\boxed{2}$."},
}


def paper_hub_specs() -> list[DatasetSpec]:
    cfg = load_config(ROOT / "conf" / "paper.yaml")
    return [s for s in [*cfg.data.sft, *cfg.data.pool, *cfg.data.eval] if s.hub_id]


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path):
    """``datasets.load_dataset`` answering only the cards' ids/configs/splits, from local JSONL files.

    Each (id, config, split) gets two rows like ``ROWS[id]``; the config name is put in the problem
    text so the tests can see the order of concatenation. Returns the list of calls made."""
    import datasets

    calls: list[tuple[str, str | None, str]] = []
    real_load = datasets.load_dataset

    def load_dataset(path, name=None, *, split=None, **kw):
        card = HUB_CARDS.get(path)
        if card is None:
            raise FileNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        if name not in card["configs"]:
            raise ValueError(f"BuilderConfig '{name}' not found. Available: {card['configs']}")
        if split not in card["splits"]:
            raise ValueError(f"Unknown split {split!r}. Should be one of {card['splits']}.")
        calls.append((path, name, split))
        f = tmp_path / f"{path.replace('/', '__')}-{name}-{split}.jsonl"
        rows = []
        for i in range(2):
            row = dict(ROWS[path])
            key = next(k for k in ("question", "query", "problem") if k in row)
            row[key] = f"[{name}/{split}/{i}] {row[key]}"
            rows.append(row)
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return real_load("json", data_files=str(f), split="train")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_rows_match_cards():
    for hub_id, row in ROWS.items():
        fields = HUB_CARDS[hub_id]["fields"]
        assert set(row) == set(fields), hub_id
        assert all(isinstance(row[k], t) for k, t in fields.items()), hub_id


@pytest.mark.parametrize("spec", paper_hub_specs(), ids=lambda s: s.name)
def test_paper_hub_specs_match_cards(spec):
    card = HUB_CARDS.get(spec.hub_id)
    assert card is not None, f"{spec.name}: hub id {spec.hub_id!r} has no card entry"
    for config in spec.hub_configs:
        assert config in card["configs"], f"{spec.name}: config {config!r} not in {card['configs']}"
    assert spec.split in card["splits"]
    assert FORMAT_FIELDS[spec.format] <= set(card["fields"]), spec.name


def test_paper_math_uses_every_subject():
    math = [s for s in paper_hub_specs() if s.hub_id == "EleutherAI/hendrycks_math"]
    assert {s.split for s in math} == {"train", "test"}
    assert all(s.hub_configs == MATH_SUBJECTS for s in math)


@pytest.mark.parametrize("spec", paper_hub_specs(), ids=lambda s: s.name)
def test_paper_hub_specs_load_offline(fake_hub, spec):
    skipped: Counter = Counter()
    problems = load_problems(spec, DataConfig(on_bad_row="error"), skipped)
    n_configs = len(spec.hub_configs)
    assert len(problems) == 2 * n_configs and not skipped
    assert [p.id for p in problems] == [f"{spec.name}-{i}" for i in range(2 * n_configs)]
    assert fake_hub == [(spec.hub_id, c, spec.split) for c in spec.hub_configs]
    p = problems[0]
    assert p.split == spec.split
    if spec.format == "gsm8k":
        assert (p.answer, p.source, p.meta) == ("72", "gsm8k", {"n_steps": 2})
        assert p.solution.endswith("The answer is $\\boxed{72}$.")
    elif spec.format == "metamathqa":
        assert (p.answer, p.source, p.meta) == ("5", "metamathqa", {"type": "MATH_AnsAug"})
    elif spec.hub_id == "HuggingFaceH4/MATH-500":
        assert (p.answer, p.source) == ("10", "math")
        assert p.meta == {"level": 2, "unique_id": "test/counting_and_probability/1.json",
                          "subject": "Counting & Probability"}
    else:  # hendrycks_math: "Level 1" -> 1, type -> subject; configs concatenated in order
        assert (p.answer, p.source, p.meta) == ("2", "math", {"level": 1, "subject": "Algebra"})
        assert [q.question.split("/")[0] for q in problems[::2]] == [f"[{c}" for c in spec.hub_configs]


def test_old_all_config_fails_clearly(fake_hub):
    spec = DatasetSpec(name="math_train", format="math", hub_id="EleutherAI/hendrycks_math", hub_config="all")
    with pytest.raises(DataError, match="math_train.*'all'"):
        load_problems(spec, DataConfig(on_bad_row="error"))


def test_hub_config_list_validation():
    with pytest.raises(ValueError, match="non-empty"):
        DatasetSpec(name="m", format="math", hub_id="x/y", hub_config=[])
    with pytest.raises(ValueError, match="repeats"):
        DatasetSpec(name="m", format="math", hub_id="x/y", hub_config=["a", "a"])
    assert DatasetSpec(name="m", format="math", hub_id="x/y").hub_configs == [None]
    assert DatasetSpec(name="m", format="math", hub_id="x/y", hub_config="a").hub_configs == ["a"]
