"""Frame sources: synthetic demo parts, image-folder replay, video file, OpenCV device index, RTSP/GStreamer URL,
GenICam camera (inspector/camera/genicam.py).

A source yields ``Capture`` objects; ``read()`` returns None when a finite source is exhausted. Image
folders are replayed without re-encoding: the file bytes go on the stream as they are.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2

from inspector.camera.frame import Capture, FrameSource
from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import CameraSection
from inspector.contracts.errors import ConfigError, InspectorError

IMAGE_SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


class SyntheticSource(FrameSource):
    def __init__(self, seed: int = 0, defect_rate: float = 0.2, size: int = 224) -> None:
        self.factory = PartFactory(seed, size)
        self.defect_rate = defect_rate

    def read(self) -> Capture:
        kind = self.factory.sample_kind(self.defect_rate)
        return Capture(image=self.factory.make(kind), truth=kind)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class FolderSource(FrameSource):
    """Replays the images under a folder; the truth label is the image's parent folder name."""

    def __init__(self, folder: Path, order: str = "name", loop: bool = True, seed: int = 0) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(
                f"camera.source.path {folder} is not a folder", "point it at a folder of .jpg/.png images"
            )
        self.root = folder
        self.files = list_images(folder)
        if not self.files:
            raise ConfigError(f"camera.source.path {folder} holds no .jpg or .png images", "check the folder")
        if order == "mtime":
            self.files.sort(key=lambda p: p.stat().st_mtime)
        elif order == "shuffle":
            random.Random(seed).shuffle(self.files)
        self.loop = loop
        self.i = 0

    def read(self) -> Capture | None:
        if self.i >= len(self.files):
            if not self.loop:
                return None
            self.i = 0
        path = self.files[self.i]
        self.i += 1
        return Capture(
            encoded=path.read_bytes(),
            encoding=IMAGE_SUFFIXES[path.suffix.lower()],
            truth=path.parent.name,
            name=str(path.relative_to(self.root)),
        )


class OpenCVSource(FrameSource):
    """Video file, device index, or RTSP/HTTP URL / GStreamer pipeline through OpenCV."""

    def __init__(self, target: str | int, loop: bool = False, gstreamer: bool = False) -> None:
        self.target, self.loop = target, loop
        api = cv2.CAP_GSTREAMER if gstreamer else cv2.CAP_ANY
        self.cap = cv2.VideoCapture(target, api)
        if not self.cap.isOpened():
            raise InspectorError(
                f"camera source {target!r} cannot be opened",
                "check the path / device index / URL and that OpenCV supports its codec",
            )

    def read(self) -> Capture | None:
        ok, bgr = self.cap.read()
        if not ok and self.loop and isinstance(self.target, str):
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.cap.read()
        if not ok:
            return None
        return Capture(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        self.cap.release()


def open_source(camera: CameraSection) -> FrameSource:
    src = camera.source
    if src.kind == "synthetic":
        return SyntheticSource(src.seed, src.defect_rate)
    if src.kind == "folder":
        return FolderSource(Path(src.path or "."), src.order, src.loop, src.seed)
    if src.kind == "video":
        return OpenCVSource(str(src.path), loop=src.loop)
    if src.kind == "device":
        return OpenCVSource(src.index)
    if src.kind == "genicam":
        from inspector.camera.genicam import open_genicam

        return open_genicam(camera)
    url = src.url or ""
    return OpenCVSource(url, gstreamer="!" in url)


__all__ = ["Capture", "FolderSource", "FrameSource", "OpenCVSource", "SyntheticSource", "list_images", "open_source"]
