"""``inspector bench``'s ours-vs-anomalib table: ours (fp32 and the kept runtime) against anomalib's
TorchInferencer and OpenVINOInferencer on anomalib's own exports, fitted on the same split, in one run.

The full run fits anomalib and exports it to OpenVINO (minutes on a shared 2-core CPU): INSPECTOR_SLOW=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer

from inspector.bench import backends
from inspector.bench.cli import _models
from inspector.runtime.package import load_package
from tests.spine_helpers import make_tiny_package


def test_models_option_names_padim_patchcore_or_none() -> None:
    assert _models("padim") == ("padim",)
    assert _models("anomalib:padim, patchcore") == ("padim", "patchcore")
    assert _models("none") == ()
    with pytest.raises(typer.BadParameter, match="use padim, patchcore or none"):
        _models("efficientad")


def test_package_without_a_data_source_skips_the_peers_with_a_note(tmp_path: Path) -> None:
    pkg = load_package(make_tiny_package(tmp_path / "tiny"))
    rows, notes = backends.ours_vs_anomalib(pkg, threads=1, runs=3)
    assert rows == [] and "anomalib peers skipped" in notes[0]


@pytest.mark.skipif(
    not os.environ.get("INSPECTOR_SLOW"), reason="fits anomalib and exports to OpenVINO: INSPECTOR_SLOW=1"
)
@pytest.mark.timeout(1800)  # anomalib's dynamo export alone took minutes on a 2-core CPU at load 15
def test_ours_and_anomalib_peers_in_one_interleaved_run(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from jobs.scenario import DriftScenario, write_base_data
    from trainer.anomalib_package import AnomalibConfig, build_anomalib_package

    root = write_base_data(
        tmp_path / "parts", DriftScenario(image_size=128, train_good=50, test_good=10, test_defects=4)
    )
    # any anomaly package with a data source takes the "ours" rows; a small zoo package builds fastest (no INT8)
    ours = build_anomalib_package(root, tmp_path / "ours", AnomalibConfig(image_size=(64, 64), int8=False), name="ours")
    rows, notes = backends.ours_vs_anomalib(load_package(ours.path), threads=2, runs=4, image_size=(64, 64))
    names = {r["backend"] for r in rows}
    assert {"ours_onnxruntime_fp32", "anomalib_padim_torchinferencer", "anomalib_padim_openvino_f32"} <= names
    assert {r["cache"] for r in rows} == {"warm", "cold", "paced"}
    assert all(r["p50_ms"] > 0 and r["image_auroc"] is not None for r in rows)
    assert any("fitted on" in n and "held-out goods" in n for n in notes)  # the peer's fit: our split, our threshold
