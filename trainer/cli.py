"""``trainer`` command line: one function per command on a plain typer app (others add commands here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inspector.contracts.errors import InspectorError

app = typer.Typer(
    help="Training tools of the inspection station: data, augmentation, training, calibration.", no_args_is_help=True
)
console = Console()


def _fail(err: InspectorError) -> typer.Exit:
    console.print(f"[red]error:[/] {err.message}")
    if err.hint:
        console.print(f"[dim]hint:[/] {err.hint}")
    return typer.Exit(code=2)


@app.command("data-report")
def data_report(
    data: Annotated[Path, typer.Argument(help="Data folder (class folders, or the anomaly layout).")],
    task: Annotated[str, typer.Option(help="classification or anomaly.")] = "classification",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Counts per class against the minimums, duplicates, image sizes and modes, warnings."""
    from trainer.data_report import build_report, print_report

    if task not in ("classification", "anomaly"):
        raise _fail(InspectorError(f"unknown task {task!r}", "use --task classification or --task anomaly"))
    try:
        report = build_report(data, task)  # type: ignore[arg-type]
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(json.dumps(report, indent=1, default=str))
    else:
        print_report(report, console)


@app.command("experiments")
def experiments(
    log: Annotated[Path | None, typer.Option(help="Experiment log (default runs/experiments.jsonl).")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric columns to show (repeatable).")] = None,
) -> None:
    """Logged runs as a table grouped by augmentation policy."""
    from trainer.experiment_log import print_runs

    print_runs(log, console, metric or None)


@app.command("train-classifier")
def train_classifier_cmd(
    data: Annotated[Path, typer.Argument(help="Class-folder data set, e.g. ../shared/data/neu_surface_defects.")],
    recipe: Annotated[Path, typer.Option(help="Recipe YAML.")] = Path("configs/recipes/neu.yaml"),
    out: Annotated[
        Path, typer.Option(help="Output folder for classifier.pt, classifier.json, reliability.png.")
    ] = Path("runs/classifier"),
    limit_per_class: Annotated[int | None, typer.Option(help="Use at most N images per class (smoke runs).")] = None,
    log: Annotated[Path | None, typer.Option(help="Experiment log (default runs/experiments.jsonl).")] = None,
    backbone: Annotated[str, typer.Option(help="Override the recipe's backbone (e.g. tf_efficientnet_lite1).")] = "",
    image_size: Annotated[int, typer.Option(help="Override the recipe's input side (multiple of 32).")] = 0,
) -> None:
    """Train the defect classifier, calibrate it on validation, report held-out metrics, save the state."""
    from trainer.classifier_run import run_classifier_recipe
    from trainer.recipe import load_recipe, override_recipe

    try:
        chosen = override_recipe(load_recipe(recipe), backbone=backbone or None, image_size=image_size or None)
        result = run_classifier_recipe(data, chosen, out, console, limit_per_class, log)
    except InspectorError as err:
        raise _fail(err) from None
    console.print(metrics_table(result.metrics))
    console.print(f"saved {out / 'classifier.pt'} (run {result.run_id})")


@app.command("backbone-sweep")
def backbone_sweep_cmd(
    data: Annotated[Path, typer.Argument(help="Anomaly-layout folder, e.g. ../shared/data/magnetic_tile.")],
    neu: Annotated[
        Path | None,
        typer.Option(help="Class-folder set for the linear-probe accuracy, e.g. ../shared/data/neu_surface_defects."),
    ] = None,
    variants: Annotated[str, typer.Option(help="Comma-separated backbone@side.")] = (
        "lite0@224,lite0@256,lite1@224,lite1@256,lite2@224,lite2@256"
    ),
    neu_per_class: Annotated[int, typer.Option(help="NEU images per class (subsample: the CPU is shared).")] = 100,
    good_limit: Annotated[int | None, typer.Option(help="Use at most N train/good images (subsample).")] = None,
    runs: Annotated[int, typer.Option(help="Timed turns per runner.")] = 40,
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("runs/backbone_sweep.json"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Lite0/1/2 at two sides each, side by side: AUROC, recall at the good-only threshold, bf16, NEU, p50."""
    from trainer.backbone_sweep import run_sweep, save, table

    try:
        report = run_sweep(
            data, [v.strip() for v in variants.split(",") if v.strip()], neu, neu_per_class, good_limit, runs
        )
    except InspectorError as err:
        raise _fail(err) from None
    save(report, out)
    print(json.dumps(report) if as_json else table(report))


@app.command("learning-curve")
def learning_curve_cmd(
    data: Annotated[Path, typer.Argument(help="Anomaly-layout folder: train/good, test/good, test/<defect>.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Save recall and AUROC vs labelled fraction as a PNG.")] = None,
    cache: Annotated[Path | None, typer.Option(help="Folder caching the extracted features (.npy).")] = None,
    target_false_reject: Annotated[float, typer.Option(help="False-reject budget of the threshold.")] = 0.02,
) -> None:
    """Recall at a good-only false-reject budget as labelled defects grow (0, 5, 10, 25, 50 % per class)."""
    from trainer.learning_curve import CurveConfig, plot_curve, print_curve, run_learning_curve

    err_console = Console(stderr=True)
    try:
        result = run_learning_curve(data, CurveConfig(target_false_reject=target_false_reject), cache, err_console)
    except InspectorError as err:
        raise _fail(err) from None
    if plot is not None:
        err_console.print(f"saved {plot_curve(result, plot)}")
    if as_json:
        typer.echo(json.dumps(result, indent=1, default=str))
    else:
        print_curve(result, console)


def metrics_table(m: dict) -> Table:  # type: ignore[type-arg]
    table = Table(title="held-out test metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("test accuracy", f"{m['test_accuracy']:.4f} (n={m['n_test']})")
    for name, r in m["per_class_recall"].items():
        table.add_row(f"recall {name}", f"{r:.4f}")
    table.add_row("temperature", f"{m['temperature']:.4f}")
    table.add_row("ECE before (15 bins)", f"{m['ece_before']:.4f}")
    table.add_row("ECE after", f"{m['ece_after']:.4f}")
    table.add_row("NLL before / after", f"{m['nll_before']:.4f} / {m['nll_after']:.4f}")
    table.add_row("time (s)", ", ".join(f"{k} {v}" for k, v in m["seconds"].items()))
    return table


# deployment commands (trainer evaluate, trainer checklist) live in trainer/cli_deploy.py
from trainer.cli_deploy import register as _register_deploy  # noqa: E402

_register_deploy(app)
from trainer.cli_package import register as _register_package  # noqa: E402

_register_package(app)
from trainer.cli_heldout import register as _register_heldout  # noqa: E402

_register_heldout(app)

if __name__ == "__main__":
    app()
