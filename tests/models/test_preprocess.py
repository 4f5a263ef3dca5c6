from __future__ import annotations

import numpy as np
import pytest

from inspector.contracts.errors import FrameError
from inspector.contracts.manifest import Preprocess
from inspector.models.preprocess import Preprocessor, letterbox_geometry


def _reference(rgb: np.ndarray, spec: Preprocess) -> np.ndarray:
    x = rgb.astype(np.float32) / 255.0
    return ((x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)).transpose(2, 0, 1)


def test_normalisation_matches_reference() -> None:
    spec = Preprocess(size=(32, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    out = Preprocessor(spec)(rgb)
    assert out.dtype == np.float32 and out.shape == (3, 32, 48)
    np.testing.assert_allclose(out, _reference(rgb, spec), atol=1e-5)


def test_stretch_resizes_any_size() -> None:
    pre = Preprocessor(Preprocess(size=(16, 16)))
    batch = pre.batch([np.zeros((100, 30, 3), np.uint8), np.zeros((5, 7, 3), np.uint8)])
    assert batch.shape == (2, 3, 16, 16)
    assert np.allclose(batch, -1.0)


def test_letterbox_pads_with_mean_colour() -> None:
    pre = Preprocessor(Preprocess(size=(20, 20), resize="letterbox"))
    out = pre(np.full((10, 20, 3), 255, np.uint8))
    box = letterbox_geometry((10, 20), (20, 20))
    assert (box.top, box.height, box.width) == (5, 10, 20)
    assert np.allclose(out[:, box.top : box.top + box.height], 1.0)
    assert np.allclose(out[:, : box.top], 0.0, atol=1e-2) and np.allclose(
        out[:, box.top + box.height :], 0.0, atol=1e-2
    )


def test_gray_copies_luma_to_three_channels() -> None:
    pre = Preprocessor(Preprocess(size=(4, 4), color="gray"))
    out = pre(np.full((4, 4, 3), (255, 0, 0), np.uint8))
    assert np.allclose(out[0], out[1]) and np.allclose(out[1], out[2])
    grey_in = pre(np.full((4, 4), 76, np.uint8))
    np.testing.assert_allclose(out, grey_in, atol=1e-2)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), "x"])
def test_bad_frames_raise_frame_error(bad: object) -> None:
    with pytest.raises(FrameError):
        Preprocessor(Preprocess(size=(4, 4)))(bad)  # type: ignore[arg-type]
