"""Line outputs: where part outcomes and the ready signal go (MQTT, Modbus TCP, OPC UA, memory for tests).

Every output is an isolated sink: its calls never block the runner (MQTT publishes through paho's
network thread, Modbus writes through a thread of its own), and a failing output never stops the
others. Optional dependencies (paho-mqtt, pymodbus, asyncua) are imported only when an output is configured.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlparse

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import ConfigError
from inspector.line.decider import Outcome, Signal

log = logging.getLogger(__name__)


class LineOutput(Protocol):
    def publish(self, outcome: Outcome) -> None: ...
    def set_ready(self, ready: bool, reason: str = "") -> None: ...
    def close(self) -> None: ...


def _host_port(url: str, schemes: tuple[str, ...], default_port: int) -> tuple[str, int, str | None, str | None]:
    parsed = urlparse(url)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise ConfigError(f"bad line output URL {url!r}", f"use {schemes[0]}://host:port")
    return parsed.hostname, parsed.port or default_port, parsed.username, parsed.password


# --------------------------------------------------------------------------- memory
@dataclass
class MemoryOutput:
    """Keeps what it was sent; for tests and the GUI's own display."""

    outcomes: list[Outcome] = field(default_factory=list)
    ready_history: list[tuple[float, bool, str]] = field(default_factory=list)

    def publish(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready_history.append((time.time(), ready, reason))

    @property
    def ready(self) -> bool | None:
        return self.ready_history[-1][1] if self.ready_history else None

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- MQTT
class MqttOutput:
    """``<prefix>/<station>/<camera>/decision`` JSON per part (QoS 1) and a retained ``<prefix>/<station>/ready``.

    The broker's last-will sets ready to "0" (retained) if this process dies or loses its connection.
    """

    def __init__(self, url: str, prefix: str, station: str, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        host, port, user, password = _host_port(url, ("mqtt", "tcp"), 1883)
        self.prefix = prefix.rstrip("/")
        self.station = station
        self.ready_topic = f"{self.prefix}/{station}/ready"
        self._ready = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=True)
        if user:
            self.client.username_pw_set(user, password)
        self.client.will_set(self.ready_topic, "0", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(0.2, 5)
        self.client.connect_async(host, port, keepalive=5)
        self.client.loop_start()

    def decision_topic(self, camera: str) -> str:
        return f"{self.prefix}/{self.station}/{camera}/decision"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if not reason_code.is_failure:
            client.publish(self.ready_topic, "1" if self._ready else "0", qos=1, retain=True)

    def publish(self, outcome: Outcome) -> None:
        self.client.publish(self.decision_topic(outcome.part.camera), json.dumps(outcome.payload()), qos=1)

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self.client.publish(self.ready_topic, "1" if ready else "0", qos=1, retain=True)

    def close(self) -> None:
        info = self.client.publish(self.ready_topic, "0", qos=1, retain=True)
        try:
            info.wait_for_publish(timeout=1.0)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- Modbus
def _noop() -> None:
    return None


@dataclass(frozen=True)
class ModbusMap:
    unit: int = 1
    reject_coil: int = 0
    ready_coil: int = 1
    seq_register: int = 0
    pulse_s: float = 0.2


class ModbusOutput:
    """Writes to the line controller (a Modbus TCP server): reject pulse coil, ready coil, sequence register.

    All writes happen on a private thread; on a connection error the thread reconnects on the next write,
    and the ready coil is rewritten every second so a restarted controller learns the state again.
    """

    def __init__(self, url: str, mapping: ModbusMap, refresh_s: float = 1.0) -> None:
        from pymodbus.client import ModbusTcpClient

        host, port, _, _ = _host_port(url, ("modbus", "modbus+tcp", "tcp"), 502)
        self.map = mapping
        self.refresh_s = refresh_s
        self.client = ModbusTcpClient(host, port=port, timeout=1, retries=0, reconnect_delay=0.1, reconnect_delay_max=2)
        self._ready = False
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._release_at: float | None = None
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="line-modbus", daemon=True)
        self._thread.start()

    # public, non-blocking
    def publish(self, outcome: Outcome) -> None:
        self._jobs.put(lambda: self._write_outcome(outcome))

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self._jobs.put(self._write_ready)

    def close(self) -> None:
        self._ready = False
        self._jobs.put(self._write_ready)
        self._jobs.put(None)
        self._thread.join(timeout=3)
        self.client.close()

    # private, on the Modbus thread
    def _write_outcome(self, outcome: Outcome) -> None:
        self._call(self.client.write_register, self.map.seq_register, outcome.part.seq % 65536)
        if outcome.signal is Signal.REJECT:
            self._call(self.client.write_coil, self.map.reject_coil, True)
            self._release_at = time.monotonic() + self.map.pulse_s

    def _write_ready(self) -> None:
        self._call(self.client.write_coil, self.map.ready_coil, self._ready)

    def _release(self) -> None:
        self._release_at = None
        self._call(self.client.write_coil, self.map.reject_coil, False)

    def _call(self, fn: Callable[..., object], address: int, value: object) -> None:
        from pymodbus.exceptions import ModbusException

        try:
            if not self.client.connected:
                self.client.connect()
            result = fn(address, value, device_id=self.map.unit)
            if getattr(result, "isError", lambda: False)():
                raise ModbusException(str(result))
        except (ModbusException, OSError) as err:
            self.errors += 1
            log.warning("modbus write to %s failed: %s", address, err)
            self.client.close()

    def _next_timeout(self, last_refresh: float) -> float:
        now = time.monotonic()
        wake = last_refresh + self.refresh_s
        if self._release_at is not None:
            wake = min(wake, self._release_at)
        return max(0.0, wake - now)

    def _loop(self) -> None:
        last_refresh = time.monotonic()
        while True:
            try:
                job = self._jobs.get(timeout=self._next_timeout(last_refresh))
            except queue.Empty:
                job = _noop
            if job is None:
                return
            job()
            now = time.monotonic()
            if self._release_at is not None and now >= self._release_at:
                self._release()
            if now - last_refresh >= self.refresh_s:
                last_refresh = now
                self._write_ready()


# --------------------------------------------------------------------------- factory
def outputs_from_config(cfg: StationConfig) -> list[LineOutput]:
    """The outputs named in ``line`` (none configured: an empty list, the runner still decides and logs)."""
    outs: list[LineOutput] = []
    if cfg.line.mqtt_url:
        outs.append(MqttOutput(cfg.line.mqtt_url, cfg.line.mqtt_topic, cfg.station.id))
    if cfg.line.modbus_url:
        mapping = ModbusMap(
            unit=cfg.line.modbus_unit,
            reject_coil=cfg.line.modbus_reject_coil,
            ready_coil=cfg.line.modbus_ready_coil,
            seq_register=cfg.line.modbus_seq_register,
            pulse_s=cfg.line.reject_pulse_ms / 1000,
        )
        outs.append(ModbusOutput(cfg.line.modbus_url, mapping))
    if cfg.line.opcua_url:
        from inspector.line.opcua import OpcuaOutput

        outs.append(OpcuaOutput(cfg))
    return outs
