from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.calibration import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
    softmax_t,
)


def test_ece_by_hand() -> None:
    # 4 samples, confidences 0.9, 0.9 (bin 13) and 0.6, 0.6 (bin 8); accuracy 1/2 in each bin
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 0])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(0.5 - 0.6)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_ece_zero_when_perfect_and_confident() -> None:
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probs, np.array([0, 1, 2, 1])) == pytest.approx(0.0)


def _overconfident(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with a moderate margin multiplied by 4: overconfident."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    logits = torch.randn(n, 4, generator=g)
    logits[torch.arange(n), labels] += 1.5
    return logits * 4.0, labels


def test_temperature_recovers_scale_and_lowers_ece(tmp_path: Path) -> None:
    val_logits, val_y = _overconfident(seed=0)
    test_logits, test_y = _overconfident(seed=1)
    t = fit_temperature(val_logits, val_y)
    assert t > 2.0  # overconfident logits need T > 1
    rep = calibrate(val_logits, val_y, test_logits, test_y)
    assert rep.ece_after < rep.ece_before / 3
    assert rep.nll_after < rep.nll_before
    assert (softmax_t(test_logits, t).argmax(1) == softmax_t(test_logits).argmax(1)).all()
    png = reliability_diagram(test_logits, test_y, t, tmp_path / "rel.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
