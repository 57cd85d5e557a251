"""The ``hnsdpo`` command line (typer app ``app``).

    hnsdpo run -c conf/tiny.yaml -o dpo.beta=0.2 --until dpo   # the flow, on Prefect's ephemeral API
    hnsdpo config -c conf/tiny.yaml -o sample.k=4              # the resolved config (exit 2 if invalid)
    hnsdpo verifier-report --data ../shared/data --limit 200   # the verifier's accuracy report

``run`` ends by printing the comparison table (``report.md``), the artifacts folder and the MLflow run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

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
    from tasks.tracking import TrackingUnavailable

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
            typer.echo(f"browse: mlflow ui --backend-store-uri {summary['tracking_uri']}")
    elif not cfg.tracking.enabled:
        typer.echo("mlflow run: tracking disabled")


@app.command("verifier-report")
def verifier_report(
    data: Annotated[Path, typer.Option(help="Shared data root (gsm8k/, math/, prm800k/).")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("artifacts/verifier-report"),
    limit: Annotated[int | None, typer.Option(min=1, help="Rows per dataset.")] = None,
    train_checks: Annotated[bool, typer.Option(help="Also validate the aggregation on PRM800K train (slow).")] = False,
) -> None:
    """Measure the verifier on the shared data (``verifier.report.cli_main``): PRM800K phase-1 test step AUROC
    and first-error accuracy, error injection, false flags on correct train references, the answer-equivalence
    suite and throughput, under the verifier's version (``verifier_report.v<N>.json``)."""
    from verifier.report import cli_main

    result = cli_main(data, out, limit, train_checks=train_checks)
    if isinstance(result, int) and result:
        raise typer.Exit(result)


if __name__ == "__main__":  # pragma: no cover
    app()
