"""A GenICam camera through a vendor's GenTL producer (``.cti``) with harvesters
(``camera.source.genicam.producer: harvesters``); opened by :func:`inspector.camera.genicam.open_genicam`."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from inspector.camera.frame import Capture, FrameSource
from inspector.camera.genicam_features import check_choice, to_rgb
from inspector.contracts.config import CameraSection
from inspector.contracts.errors import BackendUnavailable, ConfigError, InspectorError

log = logging.getLogger("inspector.camera.genicam")  # the camera's log name, whichever producer reads it

HARVESTERS_HINT = "pip install -e '.[genicam]' (harvesters) and give camera.source.genicam.cti: your vendor's .cti file"


class HarvestersSource(FrameSource):
    """A GenICam camera through a vendor's GenTL producer (``.cti``) with harvesters."""

    def __init__(self, camera: CameraSection) -> None:
        g = camera.source.genicam
        self.g, self.cam_cfg = g, camera
        self.period = 1.0 / (g.frame_rate or camera.fps)
        if g.cti is None:
            raise ConfigError(
                "camera.source.genicam.cti is not set: producer harvesters needs a GenTL producer",
                "set it to your camera vendor's .cti file, or use producer: aravis",
            )
        if not Path(g.cti).is_file():
            raise ConfigError(f"camera.source.genicam.cti {g.cti} is not a file", "point it at the vendor's .cti file")
        try:
            from harvesters.core import Harvester
        except ImportError as err:
            raise BackendUnavailable(
                f"camera.source.genicam.producer harvesters needs harvesters: {err}", HARVESTERS_HINT
            ) from err
        quiet = log.getChild("harvesters")  # harvesters logs a traceback per bad producer; our error says it once
        quiet.setLevel(logging.CRITICAL)
        self.h = Harvester(logger=quiet)
        try:
            self.h.add_file(str(g.cti), check_existence=True, check_validity=True)
            self.h.update()
        except Exception as err:  # noqa: BLE001 - harvesters/genicam raise many types for a broken producer
            self.h.reset()
            raise InspectorError(
                f"camera.source.genicam.cti {g.cti} does not load as a GenTL producer: {err}",
                "use the .cti of your camera vendor's SDK for this OS and architecture",
            ) from err
        self.ia: Any = None
        self.closed = threading.Event()
        self._open(first=True)

    def _open(self, first: bool = False) -> None:
        g = self.g
        infos = self.h.device_info_list
        try:
            if g.device_id:
                matches = [
                    i
                    for i, d in enumerate(infos)
                    if g.device_id in (getattr(d, "id_", None), getattr(d, "serial_number", None))
                ]
                if not matches:
                    raise InspectorError(
                        f"camera.source.genicam.device_id {g.device_id!r}: no such camera on producer {g.cti}",
                        f"cameras seen: {', '.join(str(d.id_) for d in infos) or 'none'}",
                    )
                self.ia = self.h.create(matches[0])
            elif not infos:
                raise InspectorError(
                    f"camera.source.kind genicam: producer {g.cti} sees no camera",
                    "check the cable, power and the vendor's driver",
                )
            else:
                self.ia = self.h.create(0)
        except InspectorError:
            if first:
                raise
            self.ia = None
            return
        nm = self.ia.remote_device.node_map
        if g.pixel_format:
            offered = list(nm.PixelFormat.symbolics)
            check_choice("pixel_format", g.pixel_format, offered, str(g.device_id or "first found"))
            nm.PixelFormat.value = g.pixel_format
        if g.exposure_us is not None:
            nm.ExposureTime.value = g.exposure_us
        if g.gain_db is not None:
            nm.Gain.value = g.gain_db
        if g.trigger == "free_run":
            nm.TriggerMode.value = "Off"
            if hasattr(nm, "AcquisitionFrameRate"):
                nm.AcquisitionFrameRate.value = 1 / self.period
        else:
            nm.TriggerSelector.value = "FrameStart"
            nm.TriggerMode.value = "On"
            nm.TriggerSource.value = "Software" if g.trigger == "software" else g.trigger_source
        self.ia.start()

    def read(self) -> Capture | None:
        while not self.closed.is_set():
            if self.ia is None:
                self._open()
                if self.ia is None:
                    self.closed.wait(self.g.reconnect_s)
                continue
            try:
                if self.g.trigger == "software":
                    self.ia.remote_device.node_map.TriggerSoftware.execute()
                with self.ia.fetch(timeout=max(self.period, self.g.reconnect_after_s)) as buf:
                    comp = buf.payload.components[0]
                    pf = str(self.ia.remote_device.node_map.PixelFormat.value)
                    image = to_rgb(bytes(comp.data), comp.width, comp.height, pf)
                return Capture(image=image)
            except Exception as err:  # noqa: BLE001 - timeouts and lost devices: reopen
                log.warning("genicam (harvesters) camera stopped answering (%s); reconnecting", err)
                self._drop()
        return None

    def _drop(self) -> None:
        ia, self.ia = self.ia, None
        if ia is not None:
            try:
                ia.destroy()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self.closed.set()
        self._drop()
        self.h.reset()
