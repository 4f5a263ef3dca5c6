"""``trainer package-anomaly`` and ``trainer package-classifier``: images to a verified package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inspector.contracts.errors import InspectorError
from trainer.cli_deploy import _fail

console = Console()


def _summary(result) -> None:  # type: ignore[no-untyped-def]
    m = result.manifest
    t = Table(title=f"package {m.version}")
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("path", str(result.path))
    t.add_row("task", m.task)
    t.add_row("INT8", f"{m.model.recommended} ({m.benchmark.get('int8', {}).get('reason', 'not attempted')})")
    for key, value in (m.metrics.get("heldout") or {}).get("anomaly", {}).items():
        if key in ("image_auroc", "pixel_auroc", "f1", "false_reject_rate", "escape_rate", "threshold"):
            t.add_row(f"anomaly {key}", f"{value:.4f}" if isinstance(value, float) else str(value))
    for name, pt in (m.metrics.get("operating_points") or {}).items():
        ci = pt.get("false_reject_rate_ci95")
        span = f" (95 % {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        t.add_row(f"threshold {name}", f"recall {pt['recall']}, false-reject {pt['false_reject_rate']}{span}")
    cls = (m.metrics.get("heldout") or {}).get("classifier", {})
    if cls:
        t.add_row("classifier accuracy", f"{cls['accuracy']:.4f}")
        t.add_row("classifier ECE", f"{cls['ece']:.4f}")
    t.add_row("checklist", "PASS" if m.checklist.get("passed") else "FAIL")
    console.print(t)


def package_anomaly_cmd(
    data: Annotated[Path, typer.Argument(help="Anomaly-layout folder: train/good, test/good, test/<defect>.")],
    out: Annotated[Path, typer.Option(help="Package folder to write.")],
    name: Annotated[str, typer.Option(help="Package name.")] = "anomaly",
    method: Annotated[str, typer.Option(help="wknn (nearest whitened good patch, default), gaussian (PaDiM-style) "
                                              "or knn (PatchCore-style).")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fit the good-only anomaly model, set its threshold from held-out good parts, export, quantise, check."""
    from dataclasses import replace

    from trainer.anomaly import ANOMALY_METHODS, AnomalyConfig
    from trainer.pipelines import build_anomaly_package

    if method and method not in ANOMALY_METHODS:
        console.print(f"[red]error:[/] --method {method!r} is not a scorer: use one of {', '.join(ANOMALY_METHODS)}")
        raise typer.Exit(code=2)
    cfg = AnomalyConfig() if not method else replace(AnomalyConfig(), method=method)  # type: ignore[arg-type]
    try:
        result = build_anomaly_package(data, out, cfg, name=name, console=console)
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps({"path": str(result.path), "version": result.manifest.version,
                          "metrics": result.manifest.metrics, "checklist": result.manifest.checklist}, default=str))
    else:
        _summary(result)


def package_classifier_cmd(
    run: Annotated[Path, typer.Argument(help="Folder written by `trainer train-classifier`.")],
    data: Annotated[Path, typer.Argument(help="The class-folder data the run was trained on.")],
    out: Annotated[Path, typer.Option(help="Package folder to write.")],
    name: Annotated[str, typer.Option(help="Package name.")] = "classifier",
) -> None:
    """Export a classifier run (calibrated) as a package evaluated on its fixed test split."""
    from trainer.pipelines import build_classifier_package

    try:
        _summary(build_classifier_package(run, data, out, name=name))
    except InspectorError as err:
        raise _fail(err) from None


def register(app: typer.Typer) -> None:
    app.command("package-anomaly")(package_anomaly_cmd)
    app.command("package-classifier")(package_classifier_cmd)
