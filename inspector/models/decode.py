"""Frame bytes to RGB arrays and back, refusing anything that is not a whole, honest, bounded image.

Checks run cheapest first: empty bytes, magic number against the declared encoding, end marker (truncation),
header dimensions read by Pillow without decoding (bombs are refused before any pixel buffer is allocated),
then the decode itself with OpenCV.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from inspector.contracts.errors import FrameError

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
ENCODINGS = ("jpeg", "png")
CAMERA_HINT = "check the camera (cable, driver, camera.encoding) and the publisher that encodes its frames"


def sniff_encoding(data: bytes) -> str | None:
    """'jpeg' or 'png' from the magic number, None when it is neither."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def decode_image(data: bytes, encoding: str = "jpeg", max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode a JPEG or PNG frame to an (H, W, 3) uint8 RGB array, or raise FrameError saying why."""
    encoding = "jpeg" if encoding.lower() == "jpg" else encoding.lower()
    if encoding not in ENCODINGS:
        raise FrameError(f"unsupported frame encoding {encoding!r}", f"use one of {ENCODINGS}")
    if not data:
        raise FrameError("empty frame (0 bytes)", CAMERA_HINT)
    actual = sniff_encoding(data)
    if actual is None:
        raise FrameError(f"frame is not a JPEG or PNG (starts with {bytes(data[:8]).hex()})", CAMERA_HINT)
    if actual != encoding:
        raise FrameError(f"frame labelled {encoding!r} holds {actual!r} bytes", "set camera.encoding to what is sent")
    _check_complete(data, actual)
    width, height = _header_size(data, actual, max_pixels)
    rgb = _decode(data, actual)
    if rgb.shape[:2] not in ((height, width), (width, height)):
        raise FrameError(
            f"decoded {actual} is {rgb.shape[1]}x{rgb.shape[0]}, header says {width}x{height}", CAMERA_HINT
        )
    return rgb


def _check_complete(data: bytes, encoding: str) -> None:
    tail = bytes(data[-64:]).rstrip(b"\x00")  # some encoders pad after the end marker
    if encoding == "jpeg" and not tail.endswith(JPEG_EOI):
        raise FrameError("truncated JPEG (no end-of-image marker)", CAMERA_HINT)
    if encoding == "png" and not tail.endswith(PNG_IEND):
        raise FrameError("truncated PNG (no IEND chunk)", CAMERA_HINT)


def _header_size(data: bytes, encoding: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header only; refuse sizes over max_pixels before anything is decoded."""
    try:
        with Image.open(io.BytesIO(data), formats=[encoding.upper()]) as im:
            width, height = im.size
    except Image.DecompressionBombError as err:
        raise FrameError(f"{encoding} header declares a decompression bomb: {err}", CAMERA_HINT) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise FrameError(f"corrupt {encoding} header: {err}", CAMERA_HINT) from None
    if width <= 0 or height <= 0:
        raise FrameError(f"{encoding} header declares an empty image ({width}x{height})", CAMERA_HINT)
    if width * height > max_pixels:
        raise FrameError(
            f"{encoding} header declares {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
            "lower the camera resolution or raise worker.max_image_pixels if such frames are expected",
        )
    return width, height


def _decode(data: bytes, encoding: str) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise FrameError(f"corrupt {encoding}: {err}", CAMERA_HINT) from None
    if bgr is None or bgr.size == 0:
        raise FrameError(f"corrupt {encoding}: the decoder could not read the image data", CAMERA_HINT)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 RGB (or (H, W) grey) array as JPEG (``quality`` 1-100) or PNG (lossless)."""
    encoding = "jpeg" if encoding.lower() == "jpg" else encoding.lower()
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(f"encode_image needs uint8 (H,W,3) or (H,W), got {rgb.dtype} {rgb.shape}")
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    if encoding == "jpeg":
        ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif encoding == "png":
        ok, out = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unsupported encoding {encoding!r}; use one of {ENCODINGS}")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {encoding}")
    return out.tobytes()
