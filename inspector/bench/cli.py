"""``inspector bench``: per-stage figures, every backend side by side, the pipeline against the bare backend,
memory; rich tables on the terminal and one JSON file (``--json PATH``).

Mount with ``app.add_typer(bench_app, name="bench")`` or ``app.command("bench")(bench)``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from inspector.contracts.errors import InspectorError
from inspector.runtime.package import ModelPackage, load_package

if TYPE_CHECKING:
    import numpy as np

bench_app = typer.Typer(help="Benchmarks: stages, backends side by side, pipeline, memory.", no_args_is_help=False)
console = Console()


def _tiny(tmp: Path) -> Path:
    from inspector.camera.synthetic import PartFactory
    from inspector.models.tiny_package import build_tiny_package

    f = PartFactory(seed=7)
    good = [f.make("good") for _ in range(60)]
    bad = [f.make(k) for k in ("scratch", "spot", "chip") for _ in range(15)]
    return build_tiny_package(tmp / "tiny", good, bad, name="bench-tiny")


def resolve_package(package: Path | None, data_dir: Path, tmp: Path) -> tuple[Path, str]:
    if package is not None:
        return package, f"package {package}"
    models = data_dir / "models"
    cands = (
        sorted((p.parent for p in models.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime, reverse=True)
        if models.is_dir()
        else []
    )
    for cand in cands:
        try:
            load_package(cand)
            return cand, f"demo package {cand} (newest that verifies under {models})"
        except InspectorError:
            continue
    return _tiny(tmp), f"no package under {models}: the tiny numpy package, built on the fly"


def _table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> Table:
    t = Table(*cols, title=title)
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    return t


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"
    return "" if v is None else str(v)


def run_bench(
    package_dir: Path,
    source: str,
    threads: int,
    runs: int,
    frames: int,
    workers: list[int],
    reference: str,
    skip: set[str],
    anomalib: tuple[str, ...] = ("padim",),
    versus: list[Path] | None = None,
) -> dict[str, Any]:
    from inspector.bench import pipeline, stages
    from inspector.bench.timing import machine

    pkg: ModelPackage = load_package(package_dir)
    frame = stages.sample_frame(pkg)
    report: dict[str, Any] = {
        "machine": machine(),
        "package": {"path": str(package_dir), "source": source, "version": pkg.version, **pipeline.package_size(pkg)},
        "threads": threads,
        "runs": runs,
        "frame_px": list(frame.shape[:2]),
        "notes": [],
    }
    console.print(
        f"[bold]bench[/bold] {source}: {pkg.version}, {threads} threads, frame {frame.shape[1]}x{frame.shape[0]}"
    )
    if versus:
        _bench_versus(report, pkg, versus, frame, threads, runs)
    if "stages" not in skip:
        _bench_stages(report, pkg, frame, threads, runs)
    if "backends" not in skip:
        _bench_backends(report, pkg, threads, runs, reference)
    if "anomalib" not in skip and anomalib:
        _bench_ours_vs_anomalib(report, pkg, threads, runs, anomalib)
    if "pipeline" not in skip:
        _bench_pipeline(report, pkg, package_dir, frame, threads, runs, frames, workers)
    console.print(
        f"model size on disk: {report['package']['model_files_mb']} MB; package {report['package']['package_mb']} MB"
    )
    return report


def _bench_versus(
    report: dict[str, Any], pkg: ModelPackage, others: list[Path], frame: np.ndarray, threads: int, runs: int
) -> None:
    """The package against other packages: full inspection of one frame, in turns, with their held-out metrics."""
    from inspector.bench.versus import METRICS, versus

    packages = {f"{pkg.manifest.name} (this)": pkg}
    for path in others:
        other = load_package(path)
        packages[f"{other.manifest.name} ({path.name})"] = other
    report["versus"] = versus(packages, frame, threads, runs)
    console.print(
        _table(
            "Packages side by side: full inspection, batch 1, in turns, warm (back to back) and paced (one frame "
            "per 1/60 s); held-out metrics from each manifest",
            report["versus"],
            ["package", "runs_at", "p50_ms", "p99_ms", "x_vs_first", "paced_p50_ms", "x_paced"]
            + [m for m in METRICS if any(r[m] is not None for r in report["versus"])],
        )
    )


def _bench_stages(report: dict[str, Any], pkg: ModelPackage, frame: np.ndarray, threads: int, runs: int) -> None:
    """Per-stage times (model stages, a Redis round trip under both fsync policies) and the store write."""
    from inspector.bench import stages

    report["stages"] = {
        **stages.model_stages(pkg, frame, threads, runs),
        "redis_round_trip_fsync_always": stages.redis_round_trip(frame, runs),
        "redis_round_trip_fsync_everysec": stages.redis_round_trip(frame, runs, "everysec"),
    }
    report["store_write"] = stages.store_write()
    console.print(
        _table(
            "per stage (ms)",
            [{"stage": k, **v} for k, v in report["stages"].items()],
            ["stage", "p50_ms", "p90_ms", "p99_ms", "n"],
        )
    )
    console.print(f"store write: {report['store_write']}")


def _bench_backends(report: dict[str, Any], pkg: ModelPackage, threads: int, runs: int, reference: str) -> None:
    """The package on every backend side by side, with the reference CNN unless ``reference`` is 'none'."""
    from inspector.bench import backends

    rows, notes = backends.package_backends(pkg, threads, runs)
    if reference != "none":
        ref_rows, ref_notes = backends.reference_backends(reference, threads, runs)
        rows, notes = rows + ref_rows, notes + ref_notes
    report["backends"], report["notes"] = rows, report["notes"] + notes
    console.print(
        _table(
            "backends side by side (interleaved runs)",
            rows,
            ["model", "backend", "batch", "cache", "p50_ms", "per_frame_ms", "fps", "speedup_vs_torch"],
        )
    )
    for n in notes:
        console.print(f"  note: {n}")


def _bench_ours_vs_anomalib(
    report: dict[str, Any], pkg: ModelPackage, threads: int, runs: int, anomalib: tuple[str, ...]
) -> None:
    """Ours against anomalib's inferencers fitted on the package's own split."""
    from inspector.bench import backends

    rows, notes = backends.ours_vs_anomalib(pkg, threads, runs, anomalib, say=console.print)
    report["ours_vs_anomalib"], report["notes"] = rows, report["notes"] + notes
    if rows:
        console.print(
            _table(
                "ours vs anomalib: same split, one interleaved run, batch 1, full inspection",
                rows,
                ["backend", "cache", "p50_ms", "p90_ms", "image_auroc", "vs_best_ours"],
            )
        )
    for n in notes:
        console.print(f"  note: {n}")


def _bench_pipeline(
    report: dict[str, Any],
    pkg: ModelPackage,
    package_dir: Path,
    frame: np.ndarray,
    threads: int,
    runs: int,
    frames: int,
    workers: list[int],
) -> None:
    """The whole pipeline (camera -> Redis -> workers -> verdicts) per worker count, against the bare backend."""
    from inspector.bench import pipeline

    bare = pipeline.bare_backend_fps(pkg, frame, threads, 8, runs)
    pipes = [pipeline.run_pipeline(package_dir, frame, n, threads, frames) for n in workers]
    for p in pipes:
        p["efficiency_vs_runner"] = round(p["fps"] / bare["runner_fps"], 5)
        p["efficiency_vs_infer"] = round(p["fps"] / bare["infer_with_prepost_fps"], 4)
    report["bare_backend"], report["pipeline"] = bare, pipes
    console.print(f"bare backend (batch 8): {bare}")
    console.print(
        _table(
            "pipeline: camera -> Redis -> workers -> verdicts",
            pipes,
            [
                "workers",
                "frames",
                "fps",
                "efficiency_vs_runner",
                "efficiency_vs_infer",
                "paced_fps",
                "latency_p50_ms",
                "latency_p99_ms",
                "worker_peak_rss_mb",
            ],
        )
    )


def _models(value: str) -> tuple[str, ...]:
    names = tuple(m.strip().removeprefix("anomalib:") for m in value.split(",") if m.strip() and m.strip() != "none")
    bad = [m for m in names if m not in ("padim", "patchcore")]
    if bad:
        raise typer.BadParameter(f"--anomalib {','.join(bad)}: use padim, patchcore or none")
    return names


@bench_app.callback(invoke_without_command=True)
def bench(
    package: Path | None = typer.Option(
        None, "--package", "-p", help="Model package folder (default: demo's, else tiny)."
    ),
    data_dir: Path = typer.Option(Path("station-data"), help="Station data folder holding models/."),
    json_path: Path | None = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    threads: int = typer.Option(2, min=1, max=256, help="CPU threads per backend / worker."),
    runs: int = typer.Option(30, min=3, max=10_000, help="Timed runs per figure (median reported)."),
    frames: int = typer.Option(400, min=20, max=100_000, help="Frames for the pipeline throughput burst."),
    workers: str = typer.Option("1,2", help="Worker counts for the pipeline, comma separated."),
    reference: str = typer.Option("resnet18", help="timm reference CNN timed beside the package ('none' to skip)."),
    skip: str = typer.Option("", help="Comma-separated parts to skip: stages, backends, anomalib, pipeline."),
    versus: list[Path] = typer.Option(
        [],
        "--versus",
        help="Another package timed against this one, in turns, with both held-out metrics (repeat for several).",
    ),
    anomalib: str = typer.Option(
        "padim",
        help="anomalib models fitted on the package's own split and timed against "
        "it (TorchInferencer, OpenVINO): padim, patchcore, comma separated; "
        "'none' to skip. Only for anomaly packages with a data source.",
    ),
) -> None:
    """Measure the station on this machine; every speed figure is a ratio from one run plus absolute medians."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            pkg_dir, source = resolve_package(package, data_dir, Path(tmp))
            report = run_bench(
                pkg_dir,
                source,
                threads,
                runs,
                frames,
                [int(x) for x in workers.split(",") if x],
                reference,
                {s.strip() for s in skip.split(",") if s.strip()},
                _models(anomalib),
                versus,
            )
        except InspectorError as err:
            Console(stderr=True).print(f"[bold red]error:[/bold red] {err.message}\n[yellow]hint:[/yellow] {err.hint}")
            raise typer.Exit(2) from None
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, default=str))
        console.print(f"figures written to {json_path}")


if __name__ == "__main__":  # pragma: no cover
    bench_app()
