"""Draw a verdict on its frame (numpy/OpenCV only, no Qt): heatmap overlay, defect regions, decision frame."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.contracts.messages import Decision, Verdict
from inspector.models.decode import decode_image, sniff_encoding

# decision colours (RGB), also used by the Qt widgets
COLOURS: dict[str, tuple[int, int, int]] = {
    "PASS": (22, 163, 74),
    "FAIL": (220, 38, 38),
    "REVIEW": (234, 179, 8),
    "ERROR": (147, 51, 234),
    "NONE": (100, 116, 139),
}
HEAT_THRESHOLD = 128  # heatmap_png maps the package threshold (1.0) to 128


@dataclass(frozen=True)
class Overlay:
    heatmap: bool = True
    regions: bool = True
    alpha: float = 0.45


def decode_frame(data: bytes) -> np.ndarray | None:
    """RGB image of an encoded frame, or None when it cannot be decoded (the view shows a placeholder)."""
    enc = sniff_encoding(data) if data else None
    if enc is None:
        return None
    try:
        return decode_image(data, enc)
    except Exception:  # noqa: BLE001 - a bad frame must never break the view
        return None


def decode_heatmap(b64: str | None) -> np.ndarray | None:
    """The verdict's grey anomaly map (uint8, 128 = threshold), or None."""
    if not b64:
        return None
    try:
        buf = np.frombuffer(base64.b64decode(b64, validate=True), np.uint8)
    except ValueError:
        return None
    grey = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return grey if grey is not None and grey.size else None


def regions(heat: np.ndarray, shape: tuple[int, int], min_area_frac: float = 0.0005) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) in image pixels around heatmap areas over the threshold."""
    h, w = shape
    big = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = (big >= HEAT_THRESHOLD).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [cv2.boundingRect(c) for c in contours]
    return [b for b in boxes if b[2] * b[3] >= min_area_frac * w * h]


def _blend_heat(img: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    h, w = img.shape[:2]
    big = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = (alpha * np.clip(big.astype(np.float32) / 255.0 * 1.6, 0, 1))[..., None]
    return (img * (1 - weight) + colour * weight).astype(np.uint8)


def compose(
    image: np.ndarray | None, verdict: Verdict | None, overlay: Overlay = Overlay(), size: tuple[int, int] = (480, 480)
) -> np.ndarray:
    """The picture the operator sees: the frame, heatmap and regions if asked, a coloured decision frame."""
    if image is None:
        img = np.full((size[1], size[0], 3), 30, np.uint8)
        cv2.putText(img, "no frame", (size[0] // 3, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (200, 200, 200), 2)
    else:
        img = np.ascontiguousarray(image[..., :3]).copy()
    if verdict is None:
        return img
    heat = decode_heatmap(verdict.heatmap)
    if heat is not None and overlay.heatmap:
        img = _blend_heat(img, heat, overlay.alpha)
    thick = max(2, img.shape[1] // 160)
    if heat is not None and overlay.regions:
        for x, y, w, h in regions(heat, img.shape[:2]):
            cv2.rectangle(img, (x, y), (x + w, y + h), (255, 255, 255), thick + 1)
            cv2.rectangle(img, (x, y), (x + w, y + h), COLOURS["FAIL"], thick)
    border = max(4, img.shape[1] // 60)
    cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), decision_colour(verdict.decision), border)
    return img


def decision_colour(decision: Decision | str | None) -> tuple[int, int, int]:
    key = decision.value if isinstance(decision, Decision) else (decision or "NONE")
    return COLOURS.get(key, COLOURS["NONE"])
