"""Regions of interest and masked rectangles travel in the package's preprocessing: the station, the trainer's
evaluation and its fit all see the same pixels, and a region that does not fit is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from inspector.contracts.config import RuntimeSection
from inspector.contracts.errors import FrameError, InspectorError
from inspector.contracts.manifest import Preprocess
from inspector.models.inference import InspectionModel
from inspector.models.preprocess import Preprocessor
from inspector.runtime.package import load_package, write_manifest
from trainer.cli_package import region_of_interest


def _frame(h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_roi_crops_before_the_resize() -> None:
    frame = _frame()
    with_roi = Preprocessor(Preprocess(size=(32, 32), roi=(40, 20, 64, 64)))
    manual = Preprocessor(Preprocess(size=(32, 32)))
    np.testing.assert_array_equal(with_roi.resize(frame), manual.resize(frame[20:84, 40:104]))


def test_masked_rectangles_are_the_mean_colour_and_normalise_to_zero() -> None:
    frame = np.full((40, 40, 3), 230, np.uint8)  # already at the network size: no resize copy
    pre = Preprocessor(Preprocess(size=(40, 40), ignore=[(0.0, 0.75, 1.0, 1.0)]))
    out = pre(frame)
    assert np.allclose(out[:, 30:, :], 0.0, atol=0.01)  # the bottom quarter is masked
    assert np.allclose(out[:, :30, :], 230 / 127.5 - 1, atol=0.01)  # the rest is the image
    assert (frame == 230).all()  # the caller's frame is untouched


def test_a_frame_the_roi_does_not_fit_is_a_frame_error_naming_the_roi() -> None:
    pre = Preprocessor(Preprocess(size=(32, 32), roi=(100, 0, 100, 50)))
    with pytest.raises(FrameError, match=r"region of interest x=100 y=0 w=100 h=50 lies outside the 160x120 frame"):
        pre(_frame())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"roi": (-1, 0, 50, 50)}, "roi \\[-1, 0, 50, 50\\] is not a region"),
        ({"ignore": [(0.5, 0.0, 1.5, 1.0)]}, "ignore\\[0\\] .* is outside the image"),
    ],
)
def test_bad_regions_are_refused_by_the_manifest(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Preprocess(size=(32, 32), **kwargs)


def test_trainer_flags_are_checked_in_one_line() -> None:
    assert region_of_interest("10,20,64,48", ["0,0.9,1,1"]) == {
        "roi": (10, 20, 64, 48),
        "ignore": ((0.0, 0.9, 1.0, 1.0),),
    }
    with pytest.raises(InspectorError, match="--roi '10,20' is not 4 comma-separated numbers"):
        region_of_interest("10,20", [])
    with pytest.raises(InspectorError, match=r"ignore\[0\] .* is outside the image"):
        region_of_interest("", ["0,0,2,1"])


def test_the_station_judges_a_frame_outside_the_packages_roi_as_an_error(tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    folder = tmp_path / "roi_pkg"
    shutil.copytree(tiny_package, folder)
    manifest = load_package(folder).manifest
    pre = manifest.preprocess.model_copy(update={"roi": (0, 0, 200, 200)})
    write_manifest(folder, manifest.model_copy(update={"preprocess": pre, "canaries": []}))
    model = InspectionModel(load_package(folder), RuntimeSection(), tmp_path / "engines")
    small, big = _frame(120, 160), _frame(240, 320)
    out = model.infer([small, big])
    assert isinstance(out[0], FrameError) and "lies outside the 160x120 frame" in out[0].message
    assert not isinstance(out[1], FrameError)
