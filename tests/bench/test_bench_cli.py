"""Smoke test of ``inspector bench``: every part runs on the tiny package and the JSON holds every figure."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from inspector.bench.cli import bench_app


def test_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(
        bench_app,
        [
            "--data-dir",
            str(tmp_path / "none"),
            "--runs",
            "3",
            "--frames",
            "30",
            "--workers",
            "1",
            "--reference",
            "none",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert "built on the fly" in report["package"]["source"]
    assert {"decode", "preprocess", "inference", "postprocess", "decision"} <= set(report["stages"])
    assert {r["backend"] for r in report["backends"]} >= {"onnxruntime_fp32"}
    assert any("GPU" in n or "CUDA" in n for n in report["notes"])
    (pipe,) = report["pipeline"]
    assert pipe["fps"] > 0 and pipe["latency_p50_ms"] > 0 and pipe["worker_peak_rss_mb"][0] > 0
    assert report["package"]["model_files_mb"]


def test_bench_versus_times_two_packages_in_turns_with_their_held_out_metrics(
    tmp_path: Path, tiny_package: Path
) -> None:
    """`inspector bench --versus OTHER`: one row per package, the ratio to the first, each one's held-out metrics."""
    import shutil

    other = tmp_path / "previous"
    shutil.copytree(tiny_package, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["metrics"] = {
        "heldout": {"anomaly": {"image_auroc": 0.9555, "escape_rate": 0.212, "false_reject_rate": 0.0155}}
    }
    (other / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(
        bench_app,
        ["-p", str(tiny_package), "--versus", str(other), "--runs", "6", "--skip", "stages,backends,anomalib,pipeline"]
        + ["--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["versus"]
    assert [r["package"].endswith("(previous)") for r in rows] == [False, True]
    assert rows[0]["x_vs_first"] == 1.0 and rows[1]["x_vs_first"] > 0 and all(r["p50_ms"] > 0 for r in rows)
    assert (rows[1]["image_auroc"], rows[1]["recall"], rows[1]["false_reject_rate"]) == (0.9555, 0.788, 0.0155)
    assert rows[0]["image_auroc"] is None  # the tiny package has no held-out evaluation
    assert "Packages side by side" in res.output
