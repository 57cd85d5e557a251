"""The ``hnsdpo`` command line (typer app ``app``).

    hnsdpo run -c conf/tiny.yaml -o dpo.beta=0.2 --until dpo   # the flow, on Prefect's ephemeral API
    hnsdpo plan -c conf/tiny.yaml -o dpo.beta=0.2              # what would run / is cached; runs nothing
    hnsdpo runs                                                # recent runs and their stages (MLflow)
    hnsdpo stage dpo -c conf/tiny.yaml --strategy random       # one stage on complete upstream artifacts
    hnsdpo gc [--yes]                                          # unreferenced keys and leftover .tmp folders
    hnsdpo config -c conf/tiny.yaml -o sample.k=4              # the resolved config (exit 2 if invalid)
    hnsdpo verifier-report --data ../shared/data --limit 200   # the verifier's accuracy report
    hnsdpo --version

``run`` ends by printing the comparison table (``report.md``), the artifacts folder and the MLflow run.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from conf import STAGES, Config, ConfigError, load_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral API server gets more than Prefect's default 20 s to start on a busy machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Verifier-guided hard-negative weighted DPO: pipeline runs and tools.")

ConfigOpt = Annotated[Path, typer.Option("-c", "--config", help="YAML profile.")]
OverrideOpt = Annotated[list[str] | None, typer.Option("-o", "--override", help="section.key=value (repeat).")]


def version_string() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from tasks.common.provenance import git_commit

    try:
        v = version("hnsdpo")
    except PackageNotFoundError:  # pragma: no cover - not installed
        v = "unknown"
    commit = git_commit()
    return f"hnsdpo {v}" + (f" (git {commit[:12]})" if commit != "unknown" else "")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_string())
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Verifier-guided hard-negative weighted DPO: pipeline runs and tools."""


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def _dur(seconds: float | None) -> str:
    from tasks.common.progress import format_duration

    return format_duration(seconds) if seconds is not None else "-"


def _load(config: Path, overrides: list[str]) -> Config:
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


@app.command("config")
def show_config(config: ConfigOpt = Path("conf/tiny.yaml"), override: OverrideOpt = None) -> None:
    """Print the resolved, validated configuration as YAML."""
    cfg = _load(config, override or [])
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command()
def run(config: ConfigOpt = Path("conf/tiny.yaml"), override: OverrideOpt = None,
        until: Annotated[str | None, typer.Option(help=f"Stop after this stage: {', '.join(STAGES)}.")] = None,
        ) -> None:
    """Run the pipeline flow locally (Prefect ephemeral API); cached stages are skipped."""
    overrides = override or []
    cfg = _load(config, overrides)
    if until is not None and until not in STAGES:
        typer.echo(f"--until: unknown stage {until!r}; expected one of {', '.join(STAGES)}", err=True)
        raise typer.Exit(2)
    from flows.pipeline import hnsdpo
    from tasks.orchestration.tracking import TrackingUnavailable

    try:
        summary = hnsdpo(profile=str(config), overrides=overrides, until=until)
    except TrackingUnavailable as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except Exception as e:
        typer.echo(f"error: the flow failed: {type(e).__name__}: {e}\n"
                   "Fix the cause and rerun the same command: complete stages are reused.", err=True)
        raise typer.Exit(1) from None
    report = summary.get("report")
    if report and Path(report).is_file():
        typer.echo("\n" + Path(report).read_text())
    typer.echo(f"artifacts: {summary['artifacts_root']}")
    if summary.get("mlflow_run_id"):
        typer.echo(f"mlflow run: {summary['mlflow_run_id']} ({summary['tracking_uri']})")
        if str(summary["tracking_uri"]).startswith("sqlite:///"):
            from tasks.orchestration.tracking import ui_url

            typer.echo(f"browse: mlflow ui --backend-store-uri {summary['tracking_uri']}  then open "
                       f"{ui_url(summary['tracking_uri'], cfg.tracking.experiment)}")
    elif not cfg.tracking.enabled:
        typer.echo("mlflow run: tracking disabled")


@app.command()
def plan(config: ConfigOpt = Path("conf/tiny.yaml"), override: OverrideOpt = None,
         until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
         history: Annotated[bool, typer.Option(help="Look up each key's last MLflow run.")] = True) -> None:
    """Show the DAG: each node's key and whether it is cached, resumes, or will run. Runs nothing."""
    from tasks.orchestration import housekeeping
    from tasks.orchestration import plan as dag

    cfg = _load(config, override or [])
    if until is not None and until not in STAGES:
        typer.echo(f"--until: unknown stage {until!r}; expected one of {', '.join(STAGES)}", err=True)
        raise typer.Exit(2)
    rows = housekeeping.plan_status(cfg, dag.pipeline(cfg, until))
    last: dict[Any, Any] = {}
    if history and cfg.tracking.enabled:
        try:
            from tasks.orchestration.tracking import last_stage_runs, tracking_uri

            last = last_stage_runs(tracking_uri(cfg), cfg.tracking.experiment)
        except Exception as e:  # noqa: BLE001 - the plan stands without history
            typer.echo(f"(no run history: {type(e).__name__}: {e})", err=True)
    typer.echo(f"plan for {config} (profile {cfg.name}), artifacts {dag.artifacts_root(cfg)}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        prev = last.get((r["stage"], r["key"]))
        before = ""
        if prev:
            verb = "cached in" if prev["cached"] else "ran"
            before = f"  last: {verb} run {prev['run_id'][:8]} {_when(prev['start'])} {prev['status']}"
        typer.echo(f"  {r['name']:<{width}}  {r['key']}  {r['status']:<8}{before}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("cached", "resumes", "will run")}
    typer.echo("  ".join(f"{n} {s}" for s, n in counts.items() if n) + f"  ({len(rows)} nodes)")


@app.command()
def runs(config: ConfigOpt = Path("conf/tiny.yaml"), override: OverrideOpt = None,
         limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many flow runs.")] = 10) -> None:
    """Recent flow runs of the profile's MLflow experiment, with their stages, states and times."""
    from tasks.orchestration.tracking import recent_runs, tracking_uri

    cfg = _load(config, override or [])
    uri = tracking_uri(cfg)
    found = recent_runs(uri, cfg.tracking.experiment, limit)
    if not found:
        typer.echo(f"no runs in experiment {cfg.tracking.experiment!r} ({uri})")
        return
    for r in found:
        typer.echo(f"{r['name']}  {r['status']}  {_when(r['start'])}  {_dur(r['seconds'])}  "
                   f"{r['profile']}  run {r['run_id'][:8]}")
        if r["reason"] and r["status"] != "FINISHED":
            typer.echo(f"    why: {r['reason'].splitlines()[0][:200]}")
        for st in r["stages"]:
            how = "cached" if st["cached"] else ("ran" if st["status"] == "FINISHED" else st["status"])
            typer.echo(f"    {st['name']:<24} {how:<8} {_dur(st['seconds']):>7}  {st['key']}")


@app.command()
def stage(name: Annotated[str, typer.Argument(help=f"One of {', '.join(STAGES)}.")],
          config: ConfigOpt = Path("conf/tiny.yaml"), override: OverrideOpt = None,
          strategy: Annotated[str | None, typer.Option(help="Only this DPO branch (pairs/dpo/evaluate).")] = None,
          ) -> None:
    """Run one stage alone on complete upstream artifacts (the ``stage-<name>`` flow)."""
    overrides = override or []
    _load(config, overrides)
    if name not in STAGES:
        typer.echo(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}", err=True)
        raise typer.Exit(2)
    from flows.stages import stage_flows

    try:
        summary = stage_flows[name](profile=str(config), overrides=overrides, strategy=strategy)
    except Exception as e:
        typer.echo(f"error: stage {name}: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1) from None
    for node, info in summary["stages"].items():
        typer.echo(f"stage {node}: {'cached' if info['cached'] else 'ran'} ({info['key']}) → {info['path']}")


@app.command()
def gc(config: Annotated[list[Path] | None, typer.Option(
           "-c", "--config", help="Profiles whose keys are kept (repeat); default: every conf/*.yaml.")] = None,
       yes: Annotated[bool, typer.Option("--yes", help="Remove what is listed (default: list only).")] = False,
       ) -> None:
    """List (and with --yes remove) artifact keys no current profile references, and leftover .tmp folders."""
    import shutil

    from tasks.orchestration import housekeeping
    from tasks.orchestration import plan as dag

    profiles = list(config or sorted(Path("conf").glob("*.yaml")))
    refs: dict[Path, set] = {}
    for p in profiles:
        try:
            cfg = load_config(p, [])
            refs.setdefault(dag.artifacts_root(cfg), set()).update(housekeeping.referenced_keys(cfg))
        except Exception as e:  # noqa: BLE001 - a profile we cannot read: we cannot tell what it uses
            typer.echo(f"error: cannot read {p}: {type(e).__name__}: {e}\n"
                       "gc removes nothing unless every profile loads; pass -c for the profiles to keep", err=True)
            raise typer.Exit(2) from None
    found = housekeeping.garbage(refs)
    if not found:
        typer.echo(f"nothing to remove under {', '.join(map(str, refs))} ({len(profiles)} profiles)")
        return
    total = 0
    for folder, why in found:
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        total += size
        typer.echo(f"  {folder}  {size / 1e6:.1f} MB  ({why})")
    typer.echo(f"{len(found)} folders, {total / 1e6:.1f} MB, not used by {', '.join(map(str, profiles))}")
    if not yes:
        typer.echo("nothing removed: rerun with --yes to remove them")
        return
    for folder, _ in found:
        shutil.rmtree(folder, ignore_errors=True)
    typer.echo(f"removed {len(found)} folders")


@app.command("verifier-report")
def verifier_report(
    data: Annotated[Path, typer.Option(help="Shared data root (gsm8k/, math/, prm800k/).")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("artifacts/verifier-report"),
    limit: Annotated[int | None, typer.Option(min=1, help="Rows per dataset.")] = None,
    train_checks: Annotated[bool, typer.Option(help="Also validate the aggregation on PRM800K train (slow).")] = False,
    publish: Annotated[bool, typer.Option(help="Also write verifier/models/verifier_report.v<N>.json, the copy "
                                               "that ships with this verifier version (full runs only).")] = False,
) -> None:
    """Measure the verifier on the shared data (``verifier.report.cli_main``): PRM800K phase-1 test step AUROC
    and first-error accuracy, error injection, false flags on correct train references, the answer-equivalence
    suite and throughput, under the verifier's version (``verifier_report.v<N>.json``)."""
    from verifier.report import cli_main

    result = cli_main(data, out, limit, train_checks=train_checks, publish=publish)
    if isinstance(result, int) and result:
        raise typer.Exit(result)


if __name__ == "__main__":  # pragma: no cover
    app()
