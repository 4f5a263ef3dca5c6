"""GenICam cameras (GigE Vision, USB3 Vision) as a frame source: Aravis, or a vendor's GenTL producer via harvesters.

``camera.source.kind: genicam`` with ``camera.source.genicam.producer``:

- ``aravis`` (default): Aravis 0.8 through GObject introspection (Debian ``gir1.2-aravis-0.8`` plus PyGObject,
  the ``genicam`` extra). Opens ``device_id`` (an Aravis id such as ``Aravis-Fake-GV01``, a serial, or an IP
  address) or the first camera found.
- ``harvesters``: a vendor's GenTL producer (``cti``) through ``harvesters``.

Trigger modes: ``free_run`` (the camera streams at the frame rate), ``software`` (the station fires one software
trigger per part and waits for its frame: one frame per part, the part id follows the trigger count), and
``hardware`` (the camera waits on ``trigger_source``, e.g. ``Line0``, wired to the part sensor or PLC).

A camera that vanishes stops delivering: the publisher's watchdog raises the camera-health event within
``camera.health_periods`` frame periods, while ``read()`` keeps reopening the device until it answers again.

``python -m inspector.camera.genicam --fake -i 127.0.0.1`` serves Aravis's fake GigE Vision camera from the
library itself (Debian's ``aravis-tools-cli`` 0.8.26 ships no ``arv-fake-gv-camera-0.8`` binary).

The harvesters source lives in :mod:`inspector.camera.genicam_harvesters`, what both producers share in
:mod:`inspector.camera.genicam_features`; their public names are re-exported here.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import Any

from inspector.camera.frame import Capture, FrameSource
from inspector.camera.genicam_features import check_bounds, check_choice, to_rgb
from inspector.camera.genicam_harvesters import HARVESTERS_HINT, HarvestersSource
from inspector.contracts.config import CameraSection, GenICamSection
from inspector.contracts.errors import BackendUnavailable, InspectorError

__all__ = [
    "ARAVIS_HINT",
    "HARVESTERS_HINT",
    "AravisSource",
    "HarvestersSource",
    "load_aravis",
    "main",
    "open_genicam",
    "serve_fake_camera",
    "to_rgb",
]

log = logging.getLogger(__name__)

ARAVIS_HINT = (
    "install Aravis and its Python binding: apt-get install gir1.2-aravis-0.8 libgirepository1.0-dev "
    "libcairo2-dev pkg-config, then pip install -e '.[genicam]'"
)


def load_aravis() -> Any:
    """The Aravis 0.8 module (GObject introspection), or BackendUnavailable with the install hint."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as err:
        raise BackendUnavailable(
            f"camera.source.kind genicam (aravis) needs Aravis 0.8 for Python: {err}", ARAVIS_HINT
        ) from err
    return Aravis


class AravisSource(FrameSource):
    """A GenICam camera through Aravis: configured once, reopened whenever it stops answering."""

    def __init__(self, camera: CameraSection) -> None:
        self.Aravis = load_aravis()
        from gi.repository import GLib

        self.GLib = GLib
        self.cam_cfg = camera
        self.g: GenICamSection = camera.source.genicam
        self.period = 1.0 / (self.g.frame_rate or camera.fps)
        self.closed = threading.Event()
        self.cam: Any = None
        self.stream: Any = None
        self.name = self.g.device_id or "(first found)"
        self.triggers = 0  # software triggers fired (one per part)
        self.frames = 0
        self.reconnects = 0
        self._pending = False  # a software trigger whose frame has not arrived yet
        self._open(first=True)

    # -- device ---------------------------------------------------------------------------------------------
    def _open(self, first: bool = False) -> None:
        Aravis, g = self.Aravis, self.g
        try:
            cam = Aravis.Camera.new(g.device_id)
        except self.GLib.Error as err:
            if not first:
                raise
            Aravis.update_device_list()
            seen = [Aravis.get_device_id(i) for i in range(Aravis.get_n_devices())]
            raise InspectorError(
                f"camera.source.genicam.device_id {g.device_id!r}: no such camera ({err.message})"
                if g.device_id
                else f"camera.source.kind genicam: no GenICam camera found ({err.message})",
                f"cameras seen: {', '.join(seen)}"
                if seen
                else "none seen: check the cable, power, and that the camera's network is on this host's subnet",
            ) from err
        self.name = f"{cam.get_vendor_name()} {cam.get_model_name()} ({g.device_id or 'first found'})"
        try:
            self._configure(cam)
        except self.GLib.Error as err:
            raise InspectorError(
                f"camera {self.name} refused its settings: {err.message}",
                "check camera.source.genicam against the camera's manual",
            ) from err
        stream = cam.create_stream(None, None)
        size = cam.get_payload()
        for _ in range(self.g.buffers):
            stream.push_buffer(Aravis.Buffer.new_allocate(size))
        cam.start_acquisition()
        self.cam, self.stream, self._pending = cam, stream, False
        self._last_ok = time.monotonic()
        log.info(
            "genicam camera %s open: %s, %s trigger",
            self.name,
            g.pixel_format or cam.get_pixel_format_as_string(),
            g.trigger,
        )

    def _configure(self, cam: Any) -> None:
        g = self.g
        if g.pixel_format:
            check_choice("pixel_format", g.pixel_format, list(cam.dup_available_pixel_formats_as_strings()), self.name)
            cam.set_pixel_format_from_string(g.pixel_format)
        if g.exposure_us is not None:
            check_bounds("exposure_us", g.exposure_us, cam.get_exposure_time_bounds(), "us", self.name)
            cam.set_exposure_time(g.exposure_us)
        if g.gain_db is not None:
            check_bounds("gain_db", g.gain_db, cam.get_gain_bounds(), "dB", self.name)
            cam.set_gain(g.gain_db)
        if g.trigger == "free_run":
            cam.clear_triggers()
            check_bounds("frame_rate", 1 / self.period, cam.get_frame_rate_bounds(), "fps", self.name)
            cam.set_frame_rate(1 / self.period)
        else:
            source = "Software" if g.trigger == "software" else g.trigger_source
            check_choice("trigger_source", source, list(cam.dup_available_trigger_sources()), self.name)
            cam.set_trigger(source)
        cam.set_acquisition_mode(self.Aravis.AcquisitionMode.CONTINUOUS)

    def _drop(self) -> None:
        cam, self.cam, self.stream = self.cam, None, None
        if cam is not None:
            try:
                cam.stop_acquisition()
            except Exception:  # noqa: BLE001 - the device is gone; nothing to stop
                pass

    def _reconnect(self) -> None:
        """Reopen the camera until it answers (or close() is called)."""
        self._drop()
        log.warning("genicam camera %s stopped answering; reconnecting", self.name)
        while not self.closed.is_set():
            try:
                self._open()
                self.reconnects += 1
                log.info("genicam camera %s reconnected", self.name)
                return
            except (self.GLib.Error, InspectorError) as err:
                log.debug("genicam reopen failed: %s", err)
                self.closed.wait(self.g.reconnect_s)

    def _alive(self) -> bool:
        try:
            self.cam.get_pixel_format()  # one register read
            return True
        except self.GLib.Error:
            return False

    # -- frames ---------------------------------------------------------------------------------------------
    def trigger(self) -> None:
        """Fire one software trigger (software mode: the station does this once per part in ``read``)."""
        self.cam.software_trigger()
        self.triggers += 1
        self._pending = True

    def read(self) -> Capture | None:
        Aravis = self.Aravis
        timeout_us = max(1000, int(self.period * 1e6))
        while not self.closed.is_set():
            if self.cam is None:
                self._reconnect()
                continue
            try:
                if self.g.trigger == "software" and not self._pending:
                    self.trigger()
                buf = self.stream.timeout_pop_buffer(timeout_us)
            except self.GLib.Error:
                self._reconnect()
                continue
            if buf is None:
                silent = time.monotonic() - self._last_ok
                if silent > self.g.reconnect_after_s:
                    if self.g.trigger == "hardware" and self._alive():
                        self._last_ok = time.monotonic()  # waiting for the next part is not a fault
                    else:
                        self._reconnect()
                continue
            try:
                if buf.get_status() != Aravis.BufferStatus.SUCCESS:
                    self._pending = False  # a damaged frame (missing packets): trigger the part again
                    continue
                pf = self._pixel_format_name(buf.get_image_pixel_format())
                image = to_rgb(buf.get_data(), buf.get_image_width(), buf.get_image_height(), pf)
                frame_id = buf.get_frame_id()
            finally:
                self.stream.push_buffer(buf)
            self._pending = False
            self._last_ok = time.monotonic()
            self.frames += 1
            return Capture(image=image, name=f"{self.cam_cfg.id} frame {frame_id}")
        return None

    def _pixel_format_name(self, code: int) -> str:
        names = getattr(self, "_pf_names", None)
        if names is None:
            names = self._pf_names = {
                getattr(self.Aravis, a): a for a in dir(self.Aravis) if a.startswith("PIXEL_FORMAT_")
            }
        attr = names.get(code, "")
        return {
            "PIXEL_FORMAT_MONO_8": "Mono8",
            "PIXEL_FORMAT_MONO_10": "Mono10",
            "PIXEL_FORMAT_MONO_12": "Mono12",
            "PIXEL_FORMAT_MONO_16": "Mono16",
            "PIXEL_FORMAT_RGB_8_PACKED": "RGB8",
            "PIXEL_FORMAT_BGR_8_PACKED": "BGR8",
            "PIXEL_FORMAT_BAYER_RG_8": "BayerRG8",
            "PIXEL_FORMAT_BAYER_BG_8": "BayerBG8",
            "PIXEL_FORMAT_BAYER_GR_8": "BayerGR8",
            "PIXEL_FORMAT_BAYER_GB_8": "BayerGB8",
        }.get(attr, attr or hex(code))

    def close(self) -> None:
        self.closed.set()
        self._drop()


def open_genicam(camera: CameraSection) -> FrameSource:
    if camera.source.genicam.producer == "harvesters":
        return HarvestersSource(camera)
    return AravisSource(camera)


def serve_fake_camera(interface: str = "127.0.0.1", serial: str = "GV01") -> None:
    """Serve Aravis's fake GigE Vision camera (id ``Aravis-Fake-<serial>``) until killed."""
    Aravis = load_aravis()
    fake = Aravis.GvFakeCamera.new(interface, serial)
    if not fake.is_running():
        raise InspectorError(
            f"fake GigE Vision camera cannot listen on {interface}",
            "give an interface name or an address of this host (e.g. 127.0.0.1)",
        )
    print(f"fake GigE Vision camera Aravis-Fake-{serial} on {interface}", flush=True)
    threading.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m inspector.camera.genicam",
        description="Aravis's fake GigE Vision camera, for trying a genicam station.",
    )
    p.add_argument("--fake", action="store_true", required=True, help="serve the fake camera")
    p.add_argument("-i", "--interface", default="127.0.0.1")
    p.add_argument("-s", "--serial", default="GV01")
    args = p.parse_args(argv)
    try:
        serve_fake_camera(args.interface, args.serial)
    except InspectorError as err:
        raise SystemExit(str(err)) from err


if __name__ == "__main__":
    main()
