"""Real peers for line tests: an in-process pymodbus TCP server, an MQTT subscriber, stream publishers."""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

from inspector.bus.streams import StationBus
from inspector.contracts.messages import Decision, FrameMeta, Verdict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], object], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


class ModbusServer:
    """A real pymodbus TCP server on its own event loop thread (the line controller stand-in).

    The test reads it back through a Modbus client, as the line controller's own logic would see it.
    """

    def __init__(self) -> None:
        from pymodbus.simulator import DataType, SimData, SimDevice

        def bits() -> list[SimData]:
            return [SimData(0, count=16, values=False, datatype=DataType.BITS)]

        def regs() -> list[SimData]:
            return [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)]

        self.port = free_port()
        self.device = SimDevice(id=0, simdata=(bits(), bits(), regs(), regs()))
        self.loop = asyncio.new_event_loop()
        self.server: object | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.reader = None

    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer

        async def serve() -> None:
            self.server = ModbusTcpServer(self.device, address=("127.0.0.1", self.port))
            await self.server.serve_forever()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve())

    def start(self) -> ModbusServer:
        from pymodbus.client import ModbusTcpClient

        self.thread.start()
        assert wait_for(self._accepts, 5, 0.05), "pymodbus server did not start"
        self.reader = ModbusTcpClient("127.0.0.1", port=self.port, timeout=1)
        self.reader.connect()
        return self

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def coil(self, address: int) -> bool:
        return bool(self.reader.read_coils(address, count=1, device_id=1).bits[0])

    def register(self, address: int) -> int:
        return int(self.reader.read_holding_registers(address, count=1, device_id=1).registers[0])

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(5)
        self.thread.join(5)


def mqtt_url() -> str:
    return os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")


def mqtt_reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 1883), timeout=0.5):
            return True
    except OSError:
        return False


class MqttListener:
    """Subscribes to a topic filter and queues (topic, payload, retain) tuples."""

    def __init__(self, url: str, topic: str) -> None:
        import paho.mqtt.client as mqtt

        parsed = urlparse(url)
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload, bool(m.retain)))
        self.client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), "MQTT subscription not acknowledged"

    def next(self, pred: Callable[[str, bytes], bool], timeout: float = 3.0) -> tuple[str, bytes, bool]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, payload, retain = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if pred(topic, payload):
                return topic, payload, retain
        raise AssertionError("expected MQTT message did not arrive")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_frame(bus: StationBus, seq: int, captured_at: float | None = None) -> FrameMeta:
    meta = FrameMeta(
        station=bus.cfg.station.id,
        camera=bus.cfg.camera.id,
        seq=seq,
        part_id=f"part-{seq}",
        captured_at=time.time() if captured_at is None else captured_at,
        encoding="png",
    )
    bus.publish_frame(meta, b"\x89PNG fake")
    return meta


def publish_verdict(bus: StationBus, meta: FrameMeta, decision: Decision) -> Verdict:
    v = Verdict(
        station=meta.station,
        frame_id=meta.frame_id,
        camera=meta.camera,
        seq=meta.seq,
        part_id=meta.part_id,
        captured_at=meta.captured_at,
        decision=decision,
        reject=decision is not Decision.PASS,
    )
    assert bus.commit_verdicts([(v, "")]) == [True]
    return v
