"""``trainer evaluate`` and ``trainer checklist``: deployment commands, registered on the trainer app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from inspector.contracts.errors import InspectorError

deploy_app = typer.Typer(help="Deployment checks of model packages.", no_args_is_help=True)
console = Console()


def _fail(err: InspectorError) -> typer.Exit:
    console.print(f"[red]error:[/] {err.message}")
    if err.hint:
        console.print(f"[dim]hint:[/] {err.hint}")
    return typer.Exit(code=2)


def evaluate_cmd(
    package: Annotated[Path, typer.Argument(help="Model package folder.")],
    data: Annotated[
        Path,
        typer.Argument(
            help="Data folder (anomaly layout: test/ is used; class folders: the fixed 60/20/20 split's test part)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plots: Annotated[Path | None, typer.Option(help="Folder for ROC, histogram and confusion PNGs.")] = None,
    precision: Annotated[str, typer.Option(help="auto (the package's recommendation), fp32 or int8.")] = "auto",
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime threads.")] = 2,
    limit: Annotated[int | None, typer.Option(min=2, help="Evaluate an evenly spaced subset (smoke runs).")] = None,
) -> None:
    """Run the EXPORTED package through the station runtime on the held-out set."""
    from trainer.evaluate import evaluate_package, load_test_split, print_report

    try:
        held = load_test_split(data, limit=limit)
        report = evaluate_package(package, held, plots, threads=threads, precision=precision)
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(json.dumps(report, default=float))
    else:
        print_report(report)


def checklist_cmd(
    package: Annotated[Path, typer.Argument(help="Model package folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime threads for the measurements.")] = 2,
    runs: Annotated[int, typer.Option(min=3, help="Timed runs for the latency p50.")] = 30,
) -> None:
    """Every deployment-checklist item with its figure and PASS/FAIL; exit code 1 if any fails."""
    from trainer.checklist import print_checklist, run_checklist

    try:
        report = run_checklist(package, threads=threads, runs=runs)
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), default=float))
    else:
        print_checklist(report)
    if not report.passed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``checklist`` to a typer app (the trainer app, or ``deploy_app``)."""
    app.command("evaluate")(evaluate_cmd)
    app.command("checklist")(checklist_cmd)


register(deploy_app)
