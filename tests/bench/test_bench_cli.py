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
