from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from inspector.contracts.errors import FrameError
from inspector.models.decode import decode_image, encode_image


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., 0] = 200  # red: catches an RGB/BGR swap
    img[10:20, 10:30] = (0, 255, 0)
    return img


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG whose header declares a huge image (a few hundred bytes on the wire)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_round_trip_is_rgb(rgb: np.ndarray, encoding: str) -> None:
    out = decode_image(encode_image(rgb, encoding, 95), encoding, max_pixels=10_000)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3
    assert out[0, 0, 0] > 150 and out[0, 0, 2] < 50


def test_zero_bytes() -> None:
    with pytest.raises(FrameError, match="empty frame"):
        decode_image(b"", "jpeg")


def test_garbage() -> None:
    with pytest.raises(FrameError, match="not a JPEG or PNG"):
        decode_image(b"hello world, not an image", "jpeg")


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_truncated(rgb: np.ndarray, encoding: str) -> None:
    data = encode_image(rgb, encoding)
    with pytest.raises(FrameError, match=f"truncated {encoding.upper()}"):
        decode_image(data[: len(data) // 2], encoding)


def test_corrupt_jpeg_body(rgb: np.ndarray) -> None:
    data = bytearray(encode_image(rgb, "jpeg"))
    data[2:40] = b"\x00" * 38  # wreck the segment headers, keep magic and end marker
    data[0:3] = b"\xff\xd8\xff"
    with pytest.raises(FrameError, match="corrupt jpeg"):
        decode_image(bytes(data), "jpeg")


def test_corrupt_png_body(rgb: np.ndarray) -> None:
    data = bytearray(encode_image(rgb, "png"))
    mid = len(data) // 2
    data[mid : mid + 16] = b"\xde\xad\xbe\xef" * 4
    with pytest.raises(FrameError, match="corrupt png"):
        decode_image(bytes(data), "png")


def test_png_bomb_refused_from_header() -> None:
    with pytest.raises(FrameError, match=r"bomb|over the limit"):
        decode_image(bomb_png(), "png", max_pixels=40_000_000)


def test_over_pixel_limit_names_the_size() -> None:
    with pytest.raises(FrameError, match="6000x5000 = 30,000,000 pixels, over the limit of 1,000,000"):
        decode_image(bomb_png(6000, 5000), "png", max_pixels=1_000_000)


def test_mislabeled_encoding(rgb: np.ndarray) -> None:
    with pytest.raises(FrameError, match="labelled 'jpeg' holds 'png'"):
        decode_image(encode_image(rgb, "png"), "jpeg")


def test_unknown_encoding(rgb: np.ndarray) -> None:
    with pytest.raises(FrameError, match="unsupported frame encoding"):
        decode_image(encode_image(rgb, "png"), "webp")


def test_grey_png_becomes_three_channels() -> None:
    grey = np.full((8, 8), 77, np.uint8)
    out = decode_image(encode_image(grey, "png"), "png")
    assert out.shape == (8, 8, 3) and (out == 77).all()
