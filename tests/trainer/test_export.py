"""ONNX export: dynamic batch really runs, and parity bounds refuse a tampered graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from tests.trainer.deploy_nets import images, tiny_net
from trainer.export import ExportError, ParityBounds, ParityError, check_batch_sizes, compare_with_torch, export_onnx


def test_export_runs_at_batch_1_2_8_and_matches_torch(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_onnx(net, images(2), tmp_path / "model.onnx")
    check_batch_sizes(path, (3, 32, 32), (1, 2, 8, 3), net.output_names)
    report = compare_with_torch(net, path, images(12, seed=3))
    assert report.passed
    assert report.top1_agreement == 1.0 and report.spearman == pytest.approx(1.0)
    assert set(report.max_abs_diff) == {"class_probs", "anomaly_score", "anomaly_map"}
    assert max(report.max_abs_diff.values()) < 1e-4


class FixedBatch(nn.Module):
    """Bakes the trace batch into a reshape, as anomalib's PatchCore export did."""

    output_names = ["class_probs"]

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.conv(x).reshape(2, -1), dim=1)


def test_fixed_batch_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="batch"):
        export_onnx(FixedBatch().eval(), images(2), tmp_path / "fixed.onnx")


def test_tampered_onnx_fails_parity(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_onnx(net, images(2), tmp_path / "model.onnx")
    model = onnx.load(str(path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.3), init.name))
    onnx.save(model, str(path))
    with pytest.raises(ParityError, match="does not match PyTorch") as err:
        compare_with_torch(net, path, images(12, seed=3))
    assert err.value.hint
    report = compare_with_torch(net, path, images(12, seed=3), enforce=False)
    assert not report.passed and report.failures
    assert not report.to_dict()["passed"]


def test_bounds_are_configurable(tmp_path: Path) -> None:
    net = tiny_net()
    path = export_onnx(net, images(2), tmp_path / "model.onnx")
    strict = ParityBounds(max_abs_diff_probs=0.0, max_rel_diff_anomaly=0.0)
    report = compare_with_torch(net, path, images(8), bounds=strict, enforce=False)
    assert report.bounds["max_abs_diff_probs"] == 0.0
    with pytest.raises(ValueError):
        ParityBounds(min_top1_agreement=2.0)
