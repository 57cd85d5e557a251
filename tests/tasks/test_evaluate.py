"""The evaluate stage: inputs checked before generation, prompts, records and metrics.

Unit tests replace ``tasks.evaluation.evalsets.generate`` with a fake that answers from a table; the end-to-end
test runs the real ``generate`` (hf engine) on the random tiny model, whose answers are nonsense.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks.evaluate as stage
import tasks.evaluation.evalsets as ev
from conf import load_config
from tasks.common.records import Problem, iter_jsonl, write_jsonl
from tasks.evaluation.grading import Graded
from tasks.generation.engine import Generation
from training.modelref import write_model_ref

ROOT = Path(__file__).resolve().parents[2]

GSM = [
    Problem(id="gsm-0", question="Mia has 3 apples and buys 4 more. How many apples?", answer="7",
            solution="3+4 = <<3+4=7>>7\n#### 7", source="gsm8k", split="test"),
    Problem(id="gsm-1", question="A box holds 1,000 pins. How many pins in 2 boxes?", answer="2000",
            solution="2*1000 = 2000\n#### 2000", source="gsm8k", split="test"),
    Problem(id="gsm-2", question="Tom had 9 cards and lost 4. How many are left?", answer="5",
            solution="9-4 = 5\n#### 5", source="gsm8k", split="test"),
]
MATH = [
    Problem(id="math-0", question="What is $\\frac{2}{4}$ in lowest terms?", answer="\\frac{1}{2}",
            source="math", split="test"),
    Problem(id="math-1", question="Compute $3^2$.", answer="9", source="math", split="test"),
]
SFT = [
    Problem(id="sft-0", question="Ann has 2 pens and gets 2 more. How many pens?", answer="4",
            solution="2+2 = <<2+2=4>>4\n#### 4", source="gsm8k", split="train"),
    Problem(id="sft-1", question="No solution here", answer="1", source="gsm8k", split="train"),
]
# question fragment -> (output, finish_reason)
ANSWERS = {
    "Mia has 3 apples": ("3+4 = 7\n#### 7", "stop"),
    "1,000 pins": ("2 boxes hold \\boxed{2,000.00} pins", "stop"),  # verifier right, strict/flexible wrong
    "Tom had 9 cards": ("Tom starts with nine cards and then he", "length"),  # cut at max_tokens
    "lowest terms": ("It is \\boxed{\\dfrac{1}{2}}", "stop"),
    "Compute $3^2$": ("", "stop"),
}


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    write_jsonl(d / "eval" / "gsm.jsonl", GSM)
    write_jsonl(d / "eval" / "math.jsonl", MATH)
    write_jsonl(d / "sft.jsonl", SFT)
    return d


@pytest.fixture()
def model_dir(tmp_path, tiny_model_dir) -> Path:
    d = tmp_path / "sft"
    d.mkdir()
    write_model_ref(d, base=str(tiny_model_dir))
    return d


def _cfg(*overrides: str):
    return load_config(ROOT / "conf/tiny.yaml", [
        "data.eval=[{name: gsm, format: gsm8k, path: gsm.jsonl}, {name: math, format: math, path: math.jsonl}]",
        "evaluate.engine=hf", "evaluate.bootstrap_samples=200", *overrides])


class FakeGenerate:
    def __init__(self):
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, model, prompts, **kw):
        self.calls.append((list(prompts), kw))
        out = []
        for p in prompts:
            key = next(k for k in ANSWERS if k in p.rsplit("<|im_start|>user", 1)[-1])
            text, finish = ANSWERS[key]
            out.append([Generation(text=text, n_tokens=len(text.split()), logprob_sum=-1.0, logprob_mean=-0.1,
                                   finish_reason=finish)])
        return out


@pytest.fixture()
def fake(monkeypatch) -> FakeGenerate:
    f = FakeGenerate()
    monkeypatch.setattr(stage, "generate", f)
    return f


def test_run_evaluate_records_and_metrics(fake, data_dir, model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    metrics = stage.run_evaluate(_cfg(), model_dir, data_dir, out)
    # one generate call for all sets, greedy
    assert len(fake.calls) == 1
    prompts, kw = fake.calls[0]
    assert len(prompts) == 5
    assert (kw["engine"], kw["n"], kw["temperature"], kw["max_tokens"]) == ("hf", 1, 0.0, 256)
    assert prompts[0].startswith("<|im_start|>user\nMia has 3 apples")
    assert "\\boxed{}" in prompts[0] and prompts[0].endswith("<|im_start|>assistant\n")
    assert "Ann has 2 pens" not in prompts[0]  # zero-shot

    gsm = [Graded.model_validate(r) for r in iter_jsonl(out / "gsm.jsonl")]
    assert [r.id for r in gsm] == ["gsm-0", "gsm-1", "gsm-2"]
    assert [(r.correct, r.reason_if_wrong) for r in gsm] == [(True, None), (True, None), (False, "truncated")]
    assert (gsm[1].strict, gsm[1].strict_correct, gsm[1].flexible, gsm[1].flexible_correct) == (
        None, False, "2,000.00", False)
    assert gsm[2].answer_matches is False and gsm[2].finish_reason == "length"
    math_rows = [Graded.model_validate(r) for r in iter_jsonl(out / "math.jsonl")]
    assert [(r.correct, r.reason_if_wrong) for r in math_rows] == [(True, None), (False, "empty")]
    assert math_rows[0].strict is None and math_rows[0].strict_correct is None  # MATH: no harness graders

    report = json.loads((out / "metrics.json").read_text())
    g = report["datasets"]["gsm"]
    assert g["format"] == "gsm8k" and g["n"] == 3 and g["accuracy"] == pytest.approx(2 / 3)
    assert g["reasons"] == {"empty": 0, "truncated": 1, "no_answer": 0, "wrong": 0}
    assert (g["strict_match"], g["flexible_extract"], g["disagreements"]) == (pytest.approx(1 / 3),
                                                                              pytest.approx(1 / 3), 1)
    assert g["disagreement_kinds"] == {"verifier=1 strict=0 flexible=0": 1}
    assert g["examples"]["verifier=1 strict=0 flexible=0"][0]["id"] == "gsm-1"
    assert report["datasets"]["math"]["accuracy"] == 0.5
    assert "strict_match" not in report["datasets"]["math"]
    assert metrics["gsm/accuracy"] == pytest.approx(2 / 3)
    assert metrics["gsm/wrong_truncated"] == 1 and metrics["math/wrong_empty"] == 1
    assert metrics["gsm/disagreements"] == 1 and "math/strict_match" not in metrics
    assert all(isinstance(v, int | float) for v in metrics.values())


def test_missing_dataset_fails_before_generation(fake, data_dir, model_dir, tmp_path):
    (data_dir / "eval" / "math.jsonl").unlink()
    cfg = _cfg("evaluate.datasets=[gsm, math]")
    with pytest.raises(ev.EvaluateError, match=r"not found: .*eval/math\.jsonl"):
        stage.run_evaluate(cfg, model_dir, data_dir, tmp_path)
    assert fake.calls == []


def test_selected_sets_limit_and_few_shot(fake, data_dir, model_dir, tmp_path):
    stage.run_evaluate(_cfg("evaluate.datasets=[gsm]", "evaluate.limit=2", "evaluate.few_shot=1"),
                    model_dir, data_dir, tmp_path)
    prompts, _ = fake.calls[0]
    assert len(prompts) == 2
    # the worked example from sft.jsonl comes first, as a user/assistant exchange
    assert prompts[0].index("Ann has 2 pens") < prompts[0].index("#### 4") < prompts[0].index("Mia has 3 apples")
    assert not (tmp_path / "math.jsonl").exists()
    assert len(list(iter_jsonl(tmp_path / "gsm.jsonl"))) == 2


def test_input_errors(data_dir, tmp_path):
    with pytest.raises(ev.EvaluateError, match="has only 1 rows with a solution"):
        ev.few_shot_examples(data_dir, 2)
    with pytest.raises(ev.EvaluateError, match="sft.jsonl, which does not exist"):
        ev.few_shot_examples(tmp_path, 1)
    assert ev.few_shot_examples(tmp_path, 0) == []
    (data_dir / "eval" / "bad.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ev.EvaluateError, match=r"bad\.jsonl: line 1 is not a valid Problem"):
        ev.load_eval_sets(data_dir, [])
    with pytest.raises(ev.EvaluateError, match="no evaluation sets"):
        ev.load_eval_sets(tmp_path, [])
    write_jsonl(data_dir / "eval" / "bad.jsonl", [GSM[0], GSM[0]])
    with pytest.raises(ev.EvaluateError, match="duplicate problem id 'gsm-0'"):
        ev.load_eval_sets(data_dir, ["bad"])


def test_undeclared_set_takes_format_from_source(data_dir):
    cfg = _cfg()
    assert ev.dataset_format(cfg, "gsm", GSM) == "gsm8k"
    assert ev.dataset_format(cfg, "other", MATH) == "math"


def test_end_to_end_on_tiny_model(data_dir, model_dir, tmp_path):
    """Real ``generate`` (hf engine) on the random tiny model: answers are nonsense, the shapes are not."""
    out = tmp_path / "out"
    out.mkdir()
    metrics = stage.run_evaluate(_cfg("evaluate.max_tokens=8", "evaluate.limit=2"), model_dir, data_dir, out)
    for name in ("gsm", "math"):
        rows = [Graded.model_validate(r) for r in iter_jsonl(out / f"{name}.jsonl")]
        assert len(rows) == 2
        for r in rows:
            assert r.prompt.startswith("<|im_start|>user\n") and r.n_tokens <= 8
            assert r.finish_reason in ("stop", "length")
            assert r.correct == (r.reason_if_wrong is None)
        assert 0.0 <= metrics[f"{name}/accuracy"] <= 1.0 and metrics[f"{name}/n"] == 2
        assert sum(metrics[f"{name}/wrong_{k}"] for k in ("empty", "truncated", "no_answer", "wrong")) == (
            2 - metrics[f"{name}/correct"])
    assert set(json.loads((out / "metrics.json").read_text())["datasets"]) == {"gsm", "math"}
