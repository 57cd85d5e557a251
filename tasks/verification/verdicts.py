"""Verdicts for sampled solutions: the verify stage's library (``tasks/verify.py`` runs it).

Reading the sample shards and the pool, the verifier's input items, marking degenerate samples, the
stage's metrics and error-share check, and the dimension histograms (``dims.png``).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.common.records import Problem, Sample, read_records
from verifier.verdict import DIMENSIONS, Verdict

FAILED_STATUSES = ("error", "timeout")
STATUSES = ("ok", "unparsed", "timeout", "error")


class VerifyError(RuntimeError):
    """The verifier failed on too many samples for the run to be trusted."""


# ---------------------------------------------------------------- reading inputs


def _float_or_nan(v: Any) -> Any:
    # JSON has no NaN/inf: ``records.write_jsonl`` writes them as null. Read null back as NaN so a
    # sample with a broken log-probability is kept (and counted downstream) instead of failing.
    return float("nan") if v is None else v


def read_samples(sample_dir: str | Path) -> list[Sample]:
    """All ``Sample`` rows of ``sample_dir/samples/shard-*.jsonl``, shards in name order.

    Null ``logprob_sum``/``logprob_mean`` are read as NaN. Raises ``FileNotFoundError`` when there is
    no shard and ``ValueError`` naming the file and line of a row that does not validate.
    """
    folder = Path(sample_dir) / "samples"
    shards = sorted(folder.glob("shard-*.jsonl"))
    if not shards:
        raise FileNotFoundError(f"no sample shards (shard-*.jsonl) in {folder}")

    def nan_logprobs(row: Any) -> Any:
        if isinstance(row, dict):
            for key in ("logprob_sum", "logprob_mean"):
                if key in row:
                    row[key] = _float_or_nan(row[key])
        return row

    return [s for shard in shards for s in read_records(shard, Sample, prepare=nan_logprobs)]


def read_problems(data_dir: str | Path, name: str = "pool.jsonl") -> dict[str, Problem]:
    """``data_dir/pool.jsonl`` as id -> ``Problem``; errors name the file, line and duplicate id."""
    path = Path(data_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    out: dict[str, Problem] = {}
    for line_no, p in enumerate(read_records(path, Problem), start=1):
        if p.id in out:
            raise ValueError(f"{path}: line {line_no}: duplicate problem id {p.id!r}")
        out[p.id] = p
    return out


def verifier_items(problems: dict[str, Problem], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """The ``score_batch`` inputs, one per sample, in sample order.

    >>> verifier_items({"p1": Problem(id="p1", question="1+1?", answer="2", source="s", split="pool")},
    ...                [Sample(problem_id="p1", index=0, text="#### 2", n_tokens=3, logprob_sum=-1.0,
    ...                        logprob_mean=-0.3, finish_reason="stop")])[0]["gold"]
    '2'
    """
    items = []
    for s in samples:
        p = problems.get(s.problem_id)
        if p is None:
            raise ValueError(f"sample (problem_id={s.problem_id!r}, index={s.index}) refers to a problem "
                             f"that is not in the pool ({len(problems)} problems)")
        items.append({"question": p.question, "solution": s.text, "gold": p.answer,
                      "reference": p.solution, "problem_id": s.problem_id, "index": s.index})
    return items


DEGENERATE_STRUCTURE = 0.8  # structural_integrity of a degenerate sample, at least


def mark_degenerate(verdict: Verdict, sample: Sample, cfg) -> Verdict:
    """``verdict`` with ``degenerate`` set from the sample's text and finish reason; a degenerate sample
    is never correct (dimensions and aggregates updated, a note says why). ``cfg`` is a VerifyConfig."""
    from verifier.core import aggregate
    from verifier.degenerate import degeneracy

    kind = degeneracy(sample.text, sample.finish_reason)
    if kind is None or verdict.status in FAILED_STATUSES:
        return verdict.model_copy(update={"degenerate": kind})
    dims = dict(verdict.dims)
    dims["answer_correctness"] = 1.0
    dims["structural_integrity"] = max(dims.get("structural_integrity", 0.0), DEGENERATE_STRUCTURE)
    note = {"truncated": "truncated at the token limit (finish_reason=length): never correct",
            "looping": "the solution repeats itself: never correct",
            "no_answer": "no stated final answer: never correct"}[kind]
    return verdict.model_copy(update={
        "degenerate": kind, "correct": False, "dims": dims, "wrongness": aggregate(dims, cfg.wrongness),
        "absurdity": aggregate(dims, cfg.absurdity), "notes": [note, *verdict.notes]})


def attach_ids(samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Set ``problem_id``/``index`` of each verdict from the sample it scores (same order)."""
    if len(verdicts) != len(samples):
        raise RuntimeError(f"verifier returned {len(verdicts)} verdicts for {len(samples)} samples")
    return [v.model_copy(update={"problem_id": s.problem_id, "index": s.index})
            for s, v in zip(samples, verdicts, strict=True)]


# ---------------------------------------------------------------- metrics and checks


def _mean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def verdict_metrics(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Summary of a run's verdicts (all plain numbers, ready for the manifest and MLflow).

    Keys: ``n_verdicts``, ``n_problems``, ``correct_rate``, ``status_<s>`` counts for every status,
    ``error_share`` (error+timeout over all), ``dim_<name>`` means of the six dimensions,
    ``wrongness_mean``, ``absurdity_mean``, ``problems_mixed`` (some correct and some incorrect
    samples: the problems that give pairs without the reference), ``problems_all_correct``,
    ``problems_all_incorrect``.
    """
    n = len(verdicts)
    status = Counter(v.status for v in verdicts)
    by_problem: dict[str, list[bool]] = defaultdict(list)
    for v in verdicts:
        by_problem[v.problem_id].append(v.correct)
    m: dict[str, Any] = {
        "n_verdicts": n,
        "n_problems": len(by_problem),
        "correct_rate": (sum(v.correct for v in verdicts) / n) if n else float("nan"),
        **{f"status_{s}": status.get(s, 0) for s in STATUSES},
        "error_share": (sum(status.get(s, 0) for s in FAILED_STATUSES) / n) if n else 0.0,
        **{f"dim_{d}": _mean(v.dims.get(d, float("nan")) for v in verdicts) for d in DIMENSIONS},
        "wrongness_mean": _mean(v.wrongness for v in verdicts),
        "absurdity_mean": _mean(v.absurdity for v in verdicts),
        "problems_mixed": sum(1 for c in by_problem.values() if any(c) and not all(c)),
        "problems_all_correct": sum(1 for c in by_problem.values() if all(c)),
        "problems_all_incorrect": sum(1 for c in by_problem.values() if not any(c)),
        **{f"degenerate_{k}": sum(v.degenerate == k for v in verdicts) for k in ("truncated", "looping", "no_answer")},
        "sound_correct": sum(v.correct and v.first_error_step is None for v in verdicts),
        "unsound_correct": sum(v.correct and v.first_error_step is not None for v in verdicts),
    }
    return m


def verifier_info() -> dict[str, Any]:
    """The verifier's version, as a plain number, and the headline numbers of the quality report that ships
    with that version (``verifier/models/verifier_report.v<N>.json``, :func:`verifier.report.headline`), so
    that they reach MLflow next to the verdict metrics. No shipped report: the version alone."""
    from verifier import VERIFIER_VERSION

    info: dict[str, Any] = {"verifier_version": VERIFIER_VERSION}
    rep = published_report()
    if rep is not None:
        from verifier.report import headline

        info.update(headline(rep))
    return info


def published_report() -> dict | None:
    """The shipped quality report of this verifier version, or None (missing, unreadable or another version)."""
    from verifier import VERIFIER_VERSION
    from verifier.report import published_path

    try:
        rep = json.loads(published_path(VERIFIER_VERSION).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(rep, dict) and (rep.get("verifier") or {}).get("verifier_version") == VERIFIER_VERSION
    return rep if ok else None


def check_error_share(verdicts: Sequence[Verdict], max_share: float, n_examples: int = 3) -> None:
    """Raise :class:`VerifyError` when the share of error/timeout verdicts is above ``max_share``.

    The message gives the share, the threshold and the notes of a few failed verdicts.
    """
    failed = [v for v in verdicts if v.status in FAILED_STATUSES]
    if not verdicts:
        return
    share = len(failed) / len(verdicts)
    if share > max_share:
        examples = "; ".join(
            f"{v.problem_id}#{v.index} [{v.status}]: {' | '.join(v.notes) or '(no notes)'}"
            for v in failed[:n_examples]
        )
        counts = Counter(v.status for v in failed)
        raise VerifyError(
            f"verifier failed on {len(failed)}/{len(verdicts)} samples (share {share:.3f} > "
            f"verify.max_error_share={max_share}; {dict(sorted(counts.items()))}). Examples: {examples}"
        )


def plot_dims(verdicts: Sequence[Verdict], path: str | Path) -> Path:
    """Histograms of the six dimensions, wrongness and absurdity (correct vs incorrect) into a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 6.5), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    series = [(d, lambda v, d=d: v.dims.get(d, float("nan"))) for d in DIMENSIONS]
    series += [("wrongness", lambda v: v.wrongness), ("absurdity", lambda v: v.absurdity)]
    bins = [i / 20 for i in range(21)]
    for ax, (name, get) in zip(axes, series, strict=True):
        for correct, color in ((True, "tab:green"), (False, "tab:red")):
            xs = [get(v) for v in verdicts if v.correct is correct]
            xs = [x for x in xs if math.isfinite(x)]
            if xs:
                ax.hist(xs, bins=bins, alpha=0.6, color=color, label="correct" if correct else "incorrect")
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlim(0, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"verifier scores (1 = fully erroneous), n={len(verdicts)}")
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


# ---------------------------------------------------------------- the stage


