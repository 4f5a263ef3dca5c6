"""What both GenICam producers (Aravis, harvesters) share: a camera buffer as an RGB image (:func:`to_rgb`),
and checks of a configured feature (pixel format, trigger source, exposure, gain, frame rate) against what the
camera offers, failing with a ConfigError that names the key and the values the camera accepts."""

from __future__ import annotations

import cv2
import numpy as np

from inspector.contracts.errors import ConfigError

# GenICam (PFNC) Bayer names -> OpenCV codes: OpenCV names a Bayer pattern by its second row, so RGGB is BayerBG
_BAYER = {
    "BayerRG8": cv2.COLOR_BayerBG2RGB,
    "BayerBG8": cv2.COLOR_BayerRG2RGB,
    "BayerGR8": cv2.COLOR_BayerGB2RGB,
    "BayerGB8": cv2.COLOR_BayerGR2RGB,
}


def to_rgb(data: bytes, width: int, height: int, pixel_format: str) -> np.ndarray:
    """One camera buffer as an RGB uint8 image."""
    raw = np.frombuffer(data, np.uint8)
    if pixel_format == "Mono8":
        mono = raw[: width * height].reshape(height, width)
        return np.repeat(mono[:, :, None], 3, axis=2)
    if pixel_format in ("Mono10", "Mono12", "Mono16"):
        bits = int(pixel_format[4:])
        mono16 = np.frombuffer(data, "<u2")[: width * height].reshape(height, width)
        mono = (mono16 >> (bits - 8)).clip(0, 255).astype(np.uint8)
        return np.repeat(mono[:, :, None], 3, axis=2)
    if pixel_format == "RGB8":
        return raw[: width * height * 3].reshape(height, width, 3).copy()
    if pixel_format == "BGR8":
        return cv2.cvtColor(raw[: width * height * 3].reshape(height, width, 3), cv2.COLOR_BGR2RGB)
    if pixel_format in _BAYER:
        return cv2.cvtColor(raw[: width * height].reshape(height, width), _BAYER[pixel_format])
    raise ConfigError(
        f"camera.source.genicam.pixel_format {pixel_format!r} cannot be converted to RGB",
        "use Mono8, Mono10/12/16, RGB8, BGR8 or a Bayer*8 format",
    )


def check_choice(key: str, value: str, offered: list[str], camera: str) -> None:
    if value not in offered:
        raise ConfigError(
            f"camera.source.genicam.{key} {value!r} is not offered by camera {camera}",
            f"use one of: {', '.join(offered)}",
        )


def check_bounds(key: str, value: float, bounds: tuple[float, float], unit: str, camera: str) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ConfigError(
            f"camera.source.genicam.{key} {value:g} {unit} is outside camera {camera}'s range",
            f"use a value from {lo:g} to {hi:g} {unit}",
        )
