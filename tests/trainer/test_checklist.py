"""Deployment checklist: every item passes on a good package and fails when its figure is missing or bad."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inspector.contracts.manifest import AnomalySpec, Manifest, Preprocess
from inspector.runtime.package import load_package, write_manifest
from tests.trainer.deploy_nets import rgb_images, tiny_net
from trainer.checklist import run_checklist
from trainer.cli_deploy import deploy_app
from trainer.evaluate import EvalSet
from trainer.package import PackageSpec, build_package
from trainer.quantize import QuantConfig

PRE = Preprocess(size=(32, 32))
GOOD_FIGURES = {"p50_ms": 1.0, "model_file_mb": 0.1, "session_peak_rss_mb": 60.0}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspector.models.preprocess import Preprocessor

    net = tiny_net(classes=0)
    held = EvalSet(rgb_images(10, seed=3), ["good", "dent"] * 5, [None] * 10, "synthetic")
    with torch.no_grad():
        raw = net(torch.from_numpy(Preprocessor(PRE).batch(held.images)))[0].numpy()
    spec = PackageSpec(
        name="chk",
        task="anomaly",
        preprocess=PRE,
        class_names=None,
        anomaly=AnomalySpec(threshold=float(np.median(raw))),
        latency_target_ms=1000.0,
        memory_budget_mb=2048.0,
        target_hardware="2-core AMD EPYC",
    )
    out = tmp_path_factory.mktemp("chk") / "pkg"
    cfg = QuantConfig(allow_few_calibration=True, bench_runs=5, bench_warmup=1)
    build_package(out, net, spec, held, calibration_images=rgb_images(6, seed=4), quant_config=cfg)
    return out


def edited(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    shutil.copytree(src, dst)
    data = load_package(dst).manifest.model_dump()
    change(data)
    write_manifest(dst, Manifest.model_validate(data))
    return dst


def failed(path: Path, figures: dict[str, Any] | None = None) -> set[str]:
    report = run_checklist(path, measure=False, measured=GOOD_FIGURES if figures is None else figures)
    return {i.key for i in report.items if not i.passed}


def test_built_package_passes_with_measurement(package: Path) -> None:
    report = run_checklist(package, runs=5)
    assert report.passed, [(i.key, i.figure, i.detail) for i in report.items if not i.passed]
    assert report.measured["p50_ms"] > 0 and report.measured["session_peak_rss_mb"] > 10
    assert load_package(package).manifest.checklist["passed"]


def test_missing_latency_target_fails(package: Path, tmp_path: Path) -> None:
    p = edited(package, tmp_path / "p", lambda d: d.update(latency_target_ms=None))
    assert failed(p) == {"latency"}
    result = CliRunner().invoke(deploy_app, ["checklist", str(p), "--runs", "3"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda d: d.update(target_hardware=None), "target_hardware"),
        (lambda d: d["benchmark"].pop("torch_eager_ms"), "baseline"),
        (lambda d: d["benchmark"].pop("int8"), "int8"),
        (lambda d: d["benchmark"]["int8"].update(reason=""), "int8"),
        (lambda d: d["parity"].update(passed=False, failures=["class_probs diff 0.3"]), "parity"),
        (lambda d: d.update(parity={}), "parity"),
        (lambda d: d["benchmark"].update(hardware="Some other CPU (64 cores)"), "benchmark"),
        (lambda d: d.update(memory_budget_mb=None), "memory"),
    ],
)
def test_bad_or_missing_figure_fails(
    package: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], key: str
) -> None:
    assert failed(edited(package, tmp_path / "p", change)) == {key}


def test_measured_figures_over_budget_fail(package: Path) -> None:
    assert failed(package, {**GOOD_FIGURES, "p50_ms": 5000.0}) == {"latency"}
    assert failed(package, {**GOOD_FIGURES, "session_peak_rss_mb": 9999.0}) == {"memory"}
    assert failed(package, {}) == {"latency", "memory"}
