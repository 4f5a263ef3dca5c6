"""Cameras and parts: the frame source, its GenICam settings, the views of a part."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from inspector.contracts.config.base import Section


class GenICamSection(Section):
    """A GenICam camera (kind=genicam): GigE Vision / USB3 Vision through Aravis, or a vendor's GenTL producer."""

    producer: Literal["aravis", "harvesters"] = Field(
        "aravis", description="aravis (open source, GigE Vision and USB3 Vision) or harvesters (a vendor's GenTL .cti)."
    )
    cti: Path | None = Field(None, description="The vendor's GenTL producer file (.cti), for producer harvesters.")
    device_id: str | None = Field(
        None,
        max_length=256,
        description="Camera to open: Aravis id (e.g. Aravis-Fake-GV01), serial number or IP "
        "address; unset: the first camera found.",
    )
    pixel_format: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]{1,32}$",
        description="GenICam PixelFormat (Mono8, RGB8, BayerRG8, Mono16...); unset: the camera's current format.",
    )
    exposure_us: float | None = Field(None, gt=0, le=1e8, description="ExposureTime in microseconds; unset: keep.")
    gain_db: float | None = Field(None, ge=-100, le=100, description="Gain in dB; unset: keep.")
    frame_rate: float | None = Field(
        None, gt=0, le=1000, description="Free-run acquisition frame rate; unset: camera.fps."
    )
    trigger: Literal["free_run", "software", "hardware"] = Field(
        "free_run",
        description="free_run: the camera streams; software: the station fires one trigger per part; "
        "hardware: the camera waits on trigger_source (one frame per part).",
    )
    trigger_source: str = Field(
        "Line0", pattern=r"^[A-Za-z0-9_]{1,32}$", description="TriggerSource input for trigger hardware (e.g. Line0)."
    )
    buffers: int = Field(8, ge=2, le=256, description="Stream buffers queued at the camera driver.")
    reconnect_after_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="No frame for this long (free run, software trigger) or no answer (hardware "
        "trigger): drop the camera and reopen it.",
    )
    reconnect_s: float = Field(0.5, gt=0, le=60, description="Wait between attempts to reopen a vanished camera.")

    @model_validator(mode="after")
    def _needs_cti(self) -> GenICamSection:
        if self.producer == "harvesters" and self.cti is None:
            raise ValueError(
                "camera.source.genicam.cti is required when producer is 'harvesters': "
                "set it to your camera vendor's GenTL producer (.cti)"
            )
        return self


class CameraSourceSection(Section):
    kind: Literal["synthetic", "folder", "video", "device", "url", "genicam"] = Field(
        "synthetic",
        description="synthetic demo parts, image folder replay, video file, OpenCV device index, "
        "RTSP/HTTP URL or GStreamer pipeline, GenICam camera (camera.source.genicam).",
    )
    path: Path | None = Field(None, description="Folder (kind=folder) or video file (kind=video).")
    index: int = Field(0, ge=0, le=64, description="OpenCV device index (kind=device).")
    url: str | None = Field(None, description="RTSP/HTTP URL or GStreamer pipeline (kind=url).")
    order: Literal["name", "mtime", "shuffle"] = Field("name", description="Replay order of a folder.")
    loop: bool = Field(True, description="Start again at the end of a folder or video.")
    seed: int = Field(0, ge=0, description="Seed for shuffle order and synthetic parts.")
    defect_rate: float = Field(0.2, ge=0, le=1, description="Share of defective synthetic parts.")
    genicam: GenICamSection = Field(default_factory=GenICamSection)


VIEW_RE = r"^[A-Za-z0-9_.-]{1,64}$"


class CameraSection(Section):
    id: str = Field("cam0", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Camera id within the station.")
    fps: float = Field(20.0, gt=0, le=1000, description="Frames per second to publish.")
    encoding: Literal["jpeg", "png"] = Field("jpeg", description="Image encoding on the frames stream.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality for encoded frames.")
    health_periods: float = Field(
        2.0, ge=1, le=100, description="A camera silent this many frame periods is unhealthy."
    )
    source: CameraSourceSection = Field(default_factory=CameraSourceSection)
    view: str | None = Field(
        None,
        pattern=VIEW_RE,
        description="The view of the part this camera takes (parts.views; unset: the camera "
        "id when parts.views is set).",
    )
    views: list[str] = Field(
        default_factory=list,
        description="Several trigger positions of this one camera: it takes these views of "
        "each part in turn, the part changes after the last (instead of view).",
    )

    def view_of(self, seq: int) -> str:
        """The view of the camera's ``seq``-th frame (with parts.views set)."""
        return self.views[seq % len(self.views)] if self.views else (self.view or self.id)


class PartsSection(Section):
    """Parts seen by several cameras or trigger positions: the line gets one verdict per part, from all views."""

    views: list[str] = Field(
        default_factory=list,
        description="Views of every part, e.g. [top, side]: a part passes only when every view "
        "passed by line.deadline_ms (empty: one frame is one part).",
    )
