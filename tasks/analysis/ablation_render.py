"""The ablation report as Markdown (``ablation.md``, a results page) and as one PNG (``ablation.png``).

Both read the typed rows of :class:`tasks.analysis.ablation_rows.AblationReport`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.analysis.ablation import DASH, FEATURES
from tasks.analysis.ablation_rows import AblationReport, ArmRow, Comparison, WeightSummary
from tasks.evaluation.report import format_p

AXIS_NAMES = {"answer": "SFT's final answer", "error": "SFT's error (verifier)",
              "known": "SFT's error (known, synthetic)", "known_type": "SFT's error type (generator)"}
RECOVERY = (("answer", "correct", "retention: SFT right"), ("answer", "near_miss", "recovery: SFT near miss"),
            ("known", "arithmetic", "recovery: SFT arithmetic slip"),
            ("known", "structural", "recovery: SFT structural error"))


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}"


def _share(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


def _ci(lo: float | None, hi: float | None, signed: bool = False) -> str:
    if lo is None or hi is None:
        return DASH
    f = (lambda v: f"{100 * v:+.1f}") if signed else _pct
    return f"[{f(lo)}, {f(hi)}]"


def _corr(x: float | None) -> str:
    return DASH if x is None else f"{x:+.2f}"


def arms_table(rows: Sequence[ArmRow], level: int, what: str = "accuracy") -> list[str]:
    lines = [f"| arm | strategy | λ | seeds | {what} | {level}% CI seeds | {level}% CI problems | per seed |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for r in rows:
        lam = DASH if r.lam is None else f"{r.lam:g}"
        per_seed = ", ".join(_pct(x) for x in r.per_seed) if r.seeds else DASH
        lines.append(f"| {r.arm} | {r.strategy or DASH} | {lam} | {len(r.seeds) or DASH} | {_pct(r.accuracy)} | "
                     f"{_ci(r.seed_low, r.seed_high)} | {_ci(r.problem_low, r.problem_high)} | {per_seed} |")
    return lines


def comparisons_table(comparisons: Sequence[Comparison], level: int) -> list[str]:
    lines = [f"| arm | vs | Δ | {level}% CI problems | MDE | {level}% CI seeds | seeds better | b / c | McNemar p "
             "| p per seed | reading |",
             "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- |"]
    for c in comparisons:
        mde = DASH if c.mde is None else f"{100 * c.mde:.1f}"
        vs = c.vs if c.same_pairs is None else f"{c.vs} (same pairs: {_share(c.same_pairs)})"
        lines.append(f"| {c.arm} | {vs} | {100 * c.diff:+.1f} | {_ci(c.diff_low, c.diff_high, True)} | {mde} "
                     f"| {_ci(c.seed_low, c.seed_high, True)} | {c.wins}/{len(c.seeds)} | {c.b} / {c.c} | "
                     f"{format_p(c.p_value)} | {', '.join(format_p(p) for p in c.p_per_seed)} | {c.reading} |")
    return lines


def _head(report: AblationReport, title: str, command: str | None, notes: str | None) -> list[str]:
    """Title, the command that regenerates the page, the commit, the computed reading and the notes."""
    lines = [f"# {title}", ""]
    if command:
        lines += ["Regenerate with:", "", "```bash", command, "```", ""]
    if report.commit:
        lines += [f"From commit `{report.commit[:12]}` (the code that ran the arms).", ""]
    if report.reading is not None:
        lines += ["## Reading", "", *(f"- {x}" for x in report.reading.sentences), ""]
        if report.reading.diagnostics:
            lines += ["Diagnostics:", ""] + [f"- {d}" for d in report.reading.diagnostics] + [""]
    if notes and notes.strip():
        lines += [notes.strip(), ""]
    return lines


def _accuracy(report: AblationReport, level: int) -> list[str]:
    lines = ["## Accuracy per arm", "",
             f"Accuracy in %: mean over seeds; {level}% CI over seeds (Student t) and over problems "
             f"(bootstrap of the seed-averaged per-problem accuracy, {report.bootstrap_samples} resamples, "
             f"seed {report.seed}); n = {report.n_problems} problems.", "", *arms_table(report.arms, level)]
    lines += ["", "## Paired differences", "",
              "Δ = accuracy(arm) − accuracy(vs) in percentage points, on the same problems. MDE = the minimal "
              f"detectable effect of the paired comparison (α = {report.alpha}, power {report.power}, from the per-problem "
              "differences averaged over seeds). McNemar: exact test on the (problem, seed) pairs pooled over "
              "seeds (b = only the arm right, c = only vs right). A weighted arm against the uniform arm is the "
              "weights alone: the share of pairs the two have in common is given beside it.", "",
              *comparisons_table(report.comparisons, level)]
    if report.sound:
        how = ("exact: the generator knows every true step" if report.sound.method == "exact"
               else "judged by the verifier")
        lines += ["", "## Sound accuracy", "",
                  f"The share of outputs whose final answer and every stated step are right ({how}); same "
                  "intervals and tests as above.", "", *arms_table(report.sound.arms, level, "sound accuracy"),
                  "", *comparisons_table(report.sound.comparisons, level)]
    return lines


def _displacement(report: AblationReport) -> list[str]:
    if not report.displacement:
        return []
    lines = ["", "## Likelihood displacement", "",
             "Mean summed log-probability of the training pairs' chosen and rejected responses under the policy "
             "before DPO (= the reference) and after it, mean over seeds. A chosen Δ below 0 is displacement: "
             "DPO lowered the chosen response too.", "",
             "| arm | seeds | chosen before | chosen after | chosen Δ | rejected Δ | chosen fell |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report.displacement:
        lines.append(f"| {r.arm} | {r.seeds} | {r.logps_chosen_before:.2f} | {r.logps_chosen_after:.2f} "
                     f"| {r.logps_chosen_delta:+.2f} | {r.logps_rejected_delta:+.2f} "
                     f"| {100 * r.share_chosen_logp_fell:.0f}% |")
    return lines


def _breakdowns(report: AblationReport) -> list[str]:
    arms = report.arm_names()
    lines = ["", "## Accuracy (%) by difficulty (number of steps)", "",
             "| steps | n | " + " | ".join(arms) + " |", "| ---: | ---: |" + " ---: |" * len(arms)]
    for row in report.by_steps:
        g = DASH if row.group is None else row.group
        lines.append(f"| {g} | {row.n} | " + " | ".join(_pct(row.accuracy[a]) for a in arms) + " |")
    if report.by_sft_error:
        lines += ["", "## Accuracy (%) by what the SFT model did on the problem", "",
                  "Final answer: near miss = within max(abs, rel·|gold|) of the gold answer. Error: arithmetic = "
                  "the verifier found a wrong calculation (symbolic_validity > 0), structural = wrong without "
                  "one; *known* = the same split from the generator's record of the problem (ground truth), and "
                  "*type* the generator's finer split (the trap fallen for, other_structural, no_answer).", "",
                  "| grouping | SFT outcome | n | " + " | ".join(arms) + " |",
                  "| --- | --- | ---: |" + " ---: |" * len(arms)]
        for r in report.by_sft_error:
            lines.append(f"| {AXIS_NAMES[r.axis]} | {r.kind} | {r.n} | "
                         + " | ".join(_pct(r.accuracy[a]) for a in arms) + " |")
    return lines


def _recovery(report: AblationReport) -> list[str]:
    """Per arm, accuracy on the problems SFT solved (retention) and on its near misses and known errors."""
    groups = {(r.axis, r.kind): r for r in report.by_sft_error}
    cols = [(label, groups[(axis, kind)]) for axis, kind, label in RECOVERY if (axis, kind) in groups]
    if not cols:
        return []
    lines = ["", "## Retention and recovery", "",
             "Accuracy (%) of each model on the problems where the SFT model was right (retention) and where it "
             "was a near miss or made a known arithmetic or structural error (recovery); n problems per column.",
             "", "| arm | " + " | ".join(f"{label} (n = {g.n})" for label, g in cols) + " |",
             "| --- |" + " ---: |" * len(cols)]
    for arm in report.arm_names():
        lines.append(f"| {arm} | " + " | ".join(_pct(g.accuracy[arm]) for _, g in cols) + " |")
    return lines


def _error_types(report: AblationReport) -> list[str]:
    t = report.error_types
    if t is None:
        return []
    lines = ["", "## The SFT model's errors by type", "",
             f"Its {t.n_wrong} wrong test outputs by the generator's known type (tasks/corpus/synthetic.py: "
             "known_error), and how the verifier split each type (arithmetic = it found a wrong calculation). "
             f"Structural (every trap and other_structural): **{_share(t.structural_share)}** known, "
             f"{_share(t.verifier_structural_share)} by the verifier.", "",
             "| known type | n | share of errors | verifier: arithmetic | verifier: structural |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.kind} | {r.n} | {_share(r.share)} | {r.verifier_arithmetic} | {r.verifier_structural} |"
              for r in t.rows]
    return lines


def _weight_row(w: WeightSummary) -> str:
    if not w.n_pairs:
        return f"| {w.arm} | 0 |" + f" {DASH} |" * 9
    deg = DASH if w.degenerate is None else ("yes" if w.degenerate else "no")
    return (f"| {w.arm} | {w.n_pairs} | {w.mean:.3f} | {w.std:.3f} | {w.min:.3f} | {w.q10:.3f} | {w.median:.3f} | "
            f"{w.q90:.3f} | {w.max:.3f} | {_share(w.clipped_share)} | {deg} |")


def _weights(report: AblationReport) -> list[str]:
    if not report.weights:
        return []
    lines = ["", "## Pair weights", "",
             "| arm | pairs | mean | std | min | q10 | median | q90 | max | clipped | degenerate |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
             *(_weight_row(w) for w in report.weights),
             "", "Pair composition: chosen = reference is the share of pairs whose chosen response is the reference "
             "solution (no sound sample); unsound negatives have the right answer with a step the verifier rejects; "
             "similarity is the rejected response's mean similarity to the chosen one (hard vs random negatives).", "",
             "| arm | pairs | chosen = reference | unsound negatives | mean similarity |",
             "| --- | ---: | ---: | ---: | ---: |",
             *(f"| {w.arm} | {w.n_pairs} | {_share(w.reference_chosen_share)} | {_share(w.unsound_negative_share)} | "
               f"{DASH if w.mean_similarity is None else f'{w.mean_similarity:.3f}'} |" for w in report.weights)]
    varying = [w for w in report.weights if w.n_pairs and not w.constant]
    if varying:
        lines += ["", "Spearman (Pearson) correlation of the pair weight with the pair features and the "
                      "rejected solution's verifier dimensions (constant weights have none):", "",
                  "| feature | " + " | ".join(w.arm for w in varying) + " |", "| --- |" + " ---: |" * len(varying)]
        for f in FEATURES:
            cells = [f"{_corr(w.correlations[f].spearman)} ({_corr(w.correlations[f].pearson)})" for w in varying]
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def _verifier(report: AblationReport) -> list[str]:
    chk = report.verifier_check
    if not chk:
        return []
    return ["", "## Verifier vs known errors (SFT outputs on the test set)", "",
            "| | known arithmetic slip | no known slip |", "| --- | ---: | ---: |",
            f"| verifier: arithmetic | {chk.tp} | {chk.fp} |", f"| verifier: structural | {chk.fn} | {chk.tn} |", "",
            f"Agreement {_share(chk.agreement)}, precision {_share(chk.precision)}, recall {_share(chk.recall)}; "
            f"verifier correctness = grader on {_share(chk.correct_agreement)} of {chk.n_judged} outputs."]


def render_markdown(report: AblationReport, command: str | None = None, title: str = "Ablation report",
                    image: str | None = "ablation.png", notes: str | None = None) -> str:
    """The report as Markdown (the tables and the computed reading); ``image``: the plot's link; ``notes``:
    Markdown written by a person after reading the results, placed after the computed reading."""
    level = round(100 * report.level)
    lines = [*_head(report, title, command, notes), *_accuracy(report, level), *_displacement(report),
             *_breakdowns(report), *_recovery(report), *_error_types(report), *_weights(report),
             *_verifier(report)]
    if image:
        lines += ["", f"![ablation plot]({image})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the plot


def _plot_arms(ax, report: AblationReport) -> None:
    x = np.arange(len(report.arms))
    acc = [100 * (r.accuracy or 0) for r in report.arms]
    lo = [a - 100 * (r.problem_low if r.problem_low is not None else a / 100) for a, r in zip(acc, report.arms,
                                                                                              strict=True)]
    hi = [100 * (r.problem_high if r.problem_high is not None else a / 100) - a for a, r in zip(acc, report.arms,
                                                                                                strict=True)]
    ax.bar(x, acc, yerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.7)
    for j, r in enumerate(report.arms):
        ax.scatter([j] * len(r.per_seed), [100 * s for s in r.per_seed], color="k", s=12, zorder=3)
    ax.set_xticks(x, report.arm_names(), rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"accuracy per arm ({round(100 * report.level)}% CI over problems; dots = seeds)")


def _plot_comparisons(ax, report: AblationReport) -> None:
    comps = report.comparisons
    y = np.arange(len(comps))
    d = [100 * c.diff for c in comps]
    err = [[v - 100 * (c.diff_low if c.diff_low is not None else v / 100) for v, c in zip(d, comps, strict=True)],
           [100 * (c.diff_high if c.diff_high is not None else v / 100) - v for v, c in zip(d, comps, strict=True)]]
    ax.errorbar(d, y, xerr=err, fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, [f"{c.arm} − {c.vs}" for c in comps])
    ax.set_xlabel("Δ accuracy (pp)")
    ax.set_title("paired differences")


def _plot_groups(ax_steps, ax_error, report: AblationReport) -> None:
    arms = report.arm_names()
    for arm in arms:
        rows = [r for r in report.by_steps if r.group is not None and r.accuracy[arm] is not None]
        ax_steps.plot([r.group for r in rows], [100 * r.accuracy[arm] for r in rows], marker="o", label=arm)
    ax_steps.set_xticks(sorted({r.group for r in report.by_steps if r.group is not None}))
    ax_steps.set_xlabel("number of steps")
    ax_steps.set_ylabel("accuracy (%)")
    ax_steps.set_title("accuracy by difficulty")
    ax_steps.legend(fontsize="small")
    groups = [r for r in report.by_sft_error if r.axis in ("answer", "error") and r.kind != "correct"]
    if groups:
        gx = np.arange(len(groups))
        width = 0.8 / max(len(arms), 1)
        for j, arm in enumerate(arms):
            ax_error.bar(gx + (j - (len(arms) - 1) / 2) * width, [100 * (g.accuracy[arm] or 0) for g in groups],
                         width, label=arm)
        ax_error.set_xticks(gx, [f"{g.kind}\n(n={g.n})" for g in groups])
        ax_error.legend(fontsize="small")
    ax_error.set_ylabel("accuracy (%)")
    ax_error.set_title("accuracy on problems the SFT model got wrong, by its error")


def _plot_weights(ax_hist, ax_corr, fig, report: AblationReport) -> None:
    for w in report.weights:
        if w.n_pairs:
            ax_hist.hist(w.weights, bins=30, alpha=0.5, label=f"{w.arm} (std {w.std:.2f})")
    ax_hist.set_xlabel("pair weight")
    ax_hist.set_title("weight distribution per arm")
    if report.weights:
        ax_hist.legend(fontsize="small")
    varying = [w for w in report.weights if w.n_pairs and not w.constant]
    if varying:
        mat = np.array([[w.correlations[f].spearman if w.correlations[f].spearman is not None else np.nan
                         for f in FEATURES] for w in varying])
        im = ax_corr.imshow(mat, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
        ax_corr.set_xticks(np.arange(len(FEATURES)), FEATURES, rotation=60, ha="right", fontsize=8)
        ax_corr.set_yticks(np.arange(len(varying)), [w.arm for w in varying])
        fig.colorbar(im, ax=ax_corr)
    ax_corr.set_title("Spearman: weight vs features / dims")


def plot_ablation(report: AblationReport, path: str | Path) -> Path:
    """One PNG: accuracy per arm (CI over problems, seed dots), paired Δ (forest plot), accuracy by steps,
    by the SFT model's error, weight histograms and weight–feature correlations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 9.5), layout="constrained")
    ax = fig.subplots(2, 3).ravel()
    _plot_arms(ax[0], report)
    _plot_comparisons(ax[1], report)
    _plot_groups(ax[2], ax[3], report)
    _plot_weights(ax[4], ax[5], fig, report)
    fig.suptitle(f"ablation — {report.reading.verdict if report.reading else ''}")
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


# ---------------------------------------------------------------- publishing, metrics


def publish(report_dir: str | Path, dest: str | Path, command: str | None = None) -> Path:
    """Write ``dest`` (e.g. ``docs/results/tiny.md``) from ``report_dir/ablation.json``, with ``command`` as
    the line that regenerates it, and copy the plot beside it as ``<stem>.png``.

    A hand-written analysis kept beside it as ``<stem>.notes.md`` (e.g. ``docs/results/tiny.notes.md``)
    is included after the computed reading, so regenerating the report keeps it."""
    report_dir, dest = Path(report_dir), Path(dest)
    notes_file = dest.with_name(dest.stem + ".notes.md")
    notes = notes_file.read_text(encoding="utf-8") if notes_file.is_file() else None
    report = AblationReport.model_validate(json.loads((report_dir / "ablation.json").read_text()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    image = dest.with_suffix(".png")
    shutil.copyfile(report_dir / "ablation.png", image)
    title = f"Ablation: {report.profile or ''} on {report.dataset or ''}"
    dest.write_text(render_markdown(report, command or report.command, title, image.name, notes), encoding="utf-8")
    return dest


def flat_metrics(report: AblationReport) -> dict[str, float]:
    """``<arm>/accuracy``, ``<arm>-<vs>/diff`` / ``p_value``, ``holds`` for the manifest and MLflow."""
    out: dict[str, float | None] = {"holds": float(report.reading.holds) if report.reading else None}
    for r in report.arms:
        out[f"{r.arm}/accuracy"] = r.accuracy
    for c in report.comparisons:
        out[f"{c.arm}-{c.vs}/diff"] = c.diff
        out[f"{c.arm}-{c.vs}/p_value"] = c.p_value
        out[f"{c.arm}-{c.vs}/mde"] = c.mde
    if report.sound:
        for r in report.sound.arms:
            out[f"{r.arm}/sound_accuracy"] = r.accuracy
        for c in report.sound.comparisons:
            out[f"{c.arm}-{c.vs}/sound_diff"] = c.diff
    if report.pool:
        out["pool/mixed_share"] = report.pool.mixed_share
        out["pool/correct_share"] = report.pool.correct_share
    for w in report.weights:
        if w.n_pairs:
            out[f"{w.arm}/weight_std"] = w.std
            out[f"{w.arm}/clipped_share"] = w.clipped_share
            out[f"{w.arm}/reference_chosen_share"] = w.reference_chosen_share
            out[f"{w.arm}/mean_similarity"] = w.mean_similarity
    return {k: float(v) for k, v in out.items() if v is not None}
