"""The OPC UA line output on a real Redis, read and written by real asyncua clients and servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision, FrameMeta, Verdict
from inspector.line import MemoryOutput, Signal
from inspector.line.opcua import OpcuaOutput
from inspector.line.outputs import outputs_from_config
from tests.line.line_peers import ModbusServer, free_port, publish_frame, wait_for
from tests.line.test_line_runner import Running, line_cfg, make_healthy

asyncua = pytest.importorskip("asyncua", reason="pip install -e '.[line]' (asyncua)")
ua = asyncua.ua

PULSE_MS = 120
NAMESPACE = "urn:inspector:test"


@pytest.fixture
def bus(station_config: StationConfig, redis_client: redis.Redis) -> StationBus:
    return StationBus(redis_client, station_config)


def verdict(
    bus: StationBus, meta: FrameMeta, decision: Decision, defect: str | None = None, version: str = "m-7"
) -> Verdict:
    v = Verdict(
        station=meta.station,
        frame_id=meta.frame_id,
        camera=meta.camera,
        seq=meta.seq,
        part_id=meta.part_id,
        captured_at=meta.captured_at,
        decision=decision,
        reject=decision is not Decision.PASS,
        defect_class=defect,
        model_version=version,
    )
    assert bus.commit_verdicts([(v, "")]) == [True]
    return v


class Watcher:
    """An OPC UA client on its own loop thread: subscribes to nodes (every change kept with its arrival time)
    and reads nodes on demand; what a PLC's program would see."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.changes: dict[str, list[tuple[float, Any]]] = {}
        self.client: Any = None
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, attempts_s: float = 20) -> Watcher:
        async def go() -> None:
            deadline = time.monotonic() + attempts_s
            while True:
                client = asyncua.Client(self.url, timeout=2)
                try:
                    await client.connect()
                    self.client = client
                    return
                except (OSError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)

        self._call(go(), attempts_s + 5)
        return self

    def node(self, node_id: str) -> Any:
        return self.client.get_node(node_id)

    def read(self, node_id: str) -> Any:
        return self._call(self.node(node_id).read_value())

    def subscribe(self, names: dict[str, str]) -> None:
        watcher = self

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                watcher.changes.setdefault(by_id[node.nodeid.to_string()], []).append((time.time(), val))

        by_id = {self.node(nid).nodeid.to_string(): name for name, nid in names.items()}

        async def go() -> None:
            sub = await self.client.create_subscription(10, Handler())
            await sub.subscribe_data_change([self.node(nid) for nid in names.values()], queuesize=100)

        self._call(go())

    def rising_edges(self, name: str) -> int:
        values = [bool(v) for _, v in self.changes.get(name, [])]
        return sum(1 for i, v in enumerate(values) if v and (i == 0 or not values[i - 1]))

    def close(self) -> None:
        if self.client is not None:
            try:
                self._call(self.client.disconnect(), 5)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)


def served_ids(out: OpcuaOutput) -> dict[str, str]:
    assert wait_for(lambda: out.connected, 20, 0.05), "the OPC UA server did not start"
    return dict(out.served_ids)


def test_node_set_while_parts_flow(station_config: StationConfig, redis_client: redis.Redis, bus: StationBus) -> None:
    """Server mode: Reject pulses once per non-PASS part (FAIL, REVIEW, late PASS, no verdict), the counters and the
    last part's values are readable, Ready is True while healthy and False after the runner stops."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/inspector"
    cfg = line_cfg(station_config, opcua_url=url, opcua_namespace=NAMESPACE, reject_pulse_ms=PULSE_MS)
    make_healthy(redis_client, cfg)
    outputs = outputs_from_config(cfg)
    (out,) = outputs
    assert isinstance(out, OpcuaOutput)
    ids = served_ids(out)
    station = cfg.station.id
    assert ids["Ready"].endswith(f"s={station}.Ready")
    watcher = Watcher(url).connect()
    try:
        with Running(cfg, outputs) as runner:
            watcher.subscribe({"Reject": ids["Reject"], "Ready": ids["Ready"]})
            assert wait_for(lambda: watcher.read(ids["Ready"]) is True, 3), "Ready never went True"
            spacing = PULSE_MS / 1000 + 0.25  # each pulse is over before the next part

            ok = publish_frame(bus, 1)
            verdict(bus, ok, Decision.PASS)
            assert wait_for(lambda: watcher.read(ids["Accepts"]) == 1, 3)
            assert watcher.read(ids["LastSignal"]) == "ACCEPT" and watcher.read(ids["ModelVersion"]) == "m-7"
            time.sleep(spacing)

            bad = publish_frame(bus, 2)
            verdict(bus, bad, Decision.FAIL, defect="crack", version="m-8")
            assert wait_for(lambda: watcher.read(ids["Rejects"]) == 1, 3)
            assert (
                watcher.read(ids["LastPartId"]),
                watcher.read(ids["LastDecision"]),
                watcher.read(ids["LastDefectClass"]),
                watcher.read(ids["ModelVersion"]),
            ) == ("part-2", "FAIL", "crack", "m-8")
            time.sleep(spacing)

            unsure = publish_frame(bus, 3)
            verdict(bus, unsure, Decision.REVIEW)
            assert wait_for(lambda: watcher.read(ids["Rejects"]) == 2, 3)
            time.sleep(spacing)

            # a PASS after the deadline is a reject (the part has left the inspection window)
            late = ok.model_copy(
                update={"id": uuid.uuid4().hex, "seq": 4, "part_id": "part-4", "captured_at": time.time() - 1.0}
            )
            verdict(bus, late, Decision.PASS)
            assert wait_for(lambda: watcher.read(ids["Rejects"]) == 3, 3)
            assert (
                watcher.read(ids["LastPartId"]),
                watcher.read(ids["LastDecision"]),
                watcher.read(ids["LastReason"]),
                watcher.read(ids["LastSignal"]),
            ) == ("part-4", "PASS", "late_verdict", "REJECT")
            time.sleep(spacing)

            missing = publish_frame(bus, 5)  # no verdict at all: rejected at the deadline
            assert wait_for(lambda: watcher.read(ids["Rejects"]) == 4, 3)
            assert (watcher.read(ids["LastPartId"]), watcher.read(ids["LastDecision"])) == (missing.part_id, "NONE")
            verdict(bus, missing, Decision.PASS)  # too late and already decided: nothing more
            time.sleep(spacing + 0.2)

            assert (watcher.read(ids["Parts"]), watcher.read(ids["Accepts"]), watcher.read(ids["Rejects"])) == (5, 1, 4)
            assert watcher.rising_edges("Reject") == 4, watcher.changes["Reject"]
            assert watcher.read(ids["Reject"]) is False, "the reject pulse was not released"
            assert runner.counts == {"accept": 1, "reject": 4}
            beat = watcher.read(ids["Heartbeat"])
            assert wait_for(lambda: watcher.read(ids["Heartbeat"]) > beat, 2.5), "Heartbeat stands still"
    finally:
        watcher.close()
    # the runner stopped: Ready was written False and the server is gone (a PLC's session to it drops)
    assert out.values["Ready"] is False and not out.connected
    with pytest.raises((OSError, TimeoutError)):
        Watcher(url).connect(attempts_s=0.1)


def test_ready_drops_within_one_second_of_heartbeat_expiry(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/inspector"
    cfg = line_cfg(station_config, opcua_url=url, opcua_namespace=NAMESPACE)
    outputs = outputs_from_config(cfg)
    ids = served_ids(outputs[0])  # type: ignore[arg-type]
    watcher = Watcher(url).connect()
    names = make_healthy(redis_client, cfg, worker_ttl_ms=1500)  # the server is up: the heartbeat's last 1.5 s
    try:
        with Running(cfg, outputs):
            watcher.subscribe({"Ready": ids["Ready"]})
            assert wait_for(lambda: watcher.changes.get("Ready") and watcher.changes["Ready"][-1][1] is True, 3)
            assert wait_for(lambda: not redis_client.exists(names.heartbeat("w1")), 5, 0.005)
            gone_at = time.time()
            assert wait_for(lambda: watcher.changes["Ready"][-1][1] is False, 2)
            dropped_after = watcher.changes["Ready"][-1][0] - gone_at
            assert dropped_after < 1.0, f"Ready dropped {dropped_after:.2f} s after the last heartbeat expired"
            redis_client.set(names.heartbeat("w2"), "1", px=5000)  # a worker is back: Ready again
            assert wait_for(lambda: watcher.changes["Ready"][-1][1] is True, 2)
    finally:
        watcher.close()


class Plc:
    """A PLC's own OPC UA server with its own node ids and data types (Int16 counters, as many PLCs use)."""

    NODES = {
        "Ready": ("Line.Ready", False, ua.VariantType.Boolean),
        "Reject": ("Line.Reject", False, ua.VariantType.Boolean),
        "LastPartId": ("Line.PartId", "", ua.VariantType.String),
        "LastDecision": ("Line.Decision", "", ua.VariantType.String),
        "Rejects": ("Line.RejectCount", 0, ua.VariantType.Int16),
        "Parts": ("Line.PartCount", 0, ua.VariantType.UInt32),
    }

    def __init__(self, port: int) -> None:
        self.url = f"opc.tcp://127.0.0.1:{port}/plc"
        self.loop = asyncio.new_event_loop()
        self.server: Any = None
        self.node_ids: dict[str, str] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> Plc:
        self.thread.start()

        async def go() -> None:
            server = asyncua.Server()
            await server.init()
            server.set_endpoint(self.url)
            idx = await server.register_namespace("urn:plc:line")
            obj = await server.nodes.objects.add_object(idx, "Line")
            for name, (sid, value, vtype) in self.NODES.items():
                node = await obj.add_variable(ua.NodeId(sid, idx), sid, ua.Variant(value, vtype))
                await node.set_writable()
                self.node_ids[name] = f"ns={idx};s={sid}"
            await server.start()
            self.server = server

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)
        return self

    def read(self, name: str) -> Any:
        node = self.server.get_node(self.node_ids[name])
        return asyncio.run_coroutine_threadsafe(node.read_value(), self.loop).result(5)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_client_mode_writes_the_plcs_own_nodes(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus
) -> None:
    plc = Plc(free_port()).start()
    try:
        cfg = line_cfg(
            station_config, opcua_url=plc.url, opcua_mode="client", opcua_nodes=plc.node_ids, reject_pulse_ms=PULSE_MS
        )
        make_healthy(redis_client, cfg)
        with Running(cfg, outputs_from_config(cfg)):
            assert wait_for(lambda: plc.read("Ready") is True, 10), "Ready never written to the PLC"
            ok = publish_frame(bus, 11)
            verdict(bus, ok, Decision.PASS)
            bad = publish_frame(bus, 12)
            verdict(bus, bad, Decision.FAIL, defect="scratch")
            assert wait_for(lambda: plc.read("Parts") == 2 and plc.read("Rejects") == 1, 5)
            assert (plc.read("LastPartId"), plc.read("LastDecision")) == ("part-12", "FAIL")
            assert wait_for(lambda: plc.read("Reject") is False, 2), "the reject pulse was not released"
        assert wait_for(lambda: plc.read("Ready") is False, 5), "Ready not dropped on the PLC at shutdown"
    finally:
        plc.stop()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a hung PLC."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield f"opc.tcp://127.0.0.1:{srv.getsockname()[1]}/plc"
    srv.close()


def test_endpoint_that_does_not_answer_is_one_line_and_inspection_goes_on(
    station_config: StationConfig,
    redis_client: redis.Redis,
    bus: StationBus,
    silent_endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    cfg = line_cfg(
        station_config,
        opcua_url=silent_endpoint,
        opcua_mode="client",
        opcua_nodes={"Reject": "ns=2;s=Line.Reject"},
        opcua_timeout_s=0.5,
    )
    make_healthy(redis_client, cfg)
    memory = MemoryOutput()
    t0 = time.monotonic()
    outputs = [*outputs_from_config(cfg), memory]
    assert time.monotonic() - t0 < 2, "building the OPC UA output waited on the endpoint"
    with Running(cfg, outputs) as runner:
        assert wait_for(lambda: memory.ready is True, 2)
        for seq in (21, 22, 23):
            meta = publish_frame(bus, seq)
            verdict(bus, meta, Decision.PASS if seq != 22 else Decision.FAIL)
        assert wait_for(lambda: len(memory.outcomes) == 3, 3), "inspection stopped behind the OPC UA output"
        assert [o.signal for o in memory.outcomes] == [Signal.ACCEPT, Signal.REJECT, Signal.ACCEPT]
        time.sleep(3)  # several reconnect attempts
        assert runner.counts == {"accept": 2, "reject": 1}
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith(("inspector.line", "asyncua")) and r.levelno >= logging.WARNING
        ]
    assert len(lines) == 1, lines
    assert silent_endpoint in lines[0] and "does not answer" in lines[0] and "line.opcua_url" in lines[0]
    assert "\n" not in lines[0]


def test_server_port_in_use_is_one_line_and_the_line_goes_on(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        url = f"opc.tcp://127.0.0.1:{taken.getsockname()[1]}/inspector"
        cfg = line_cfg(station_config, opcua_url=url)
        make_healthy(redis_client, cfg)
        memory = MemoryOutput()
        (out,) = outputs_from_config(cfg)
        with Running(cfg, [out, memory]):
            assert wait_for(lambda: out.errors == 1, 20)  # type: ignore[attr-defined]
            meta = publish_frame(bus, 31)
            verdict(bus, meta, Decision.FAIL)
            assert wait_for(lambda: len(memory.outcomes) == 1, 3)
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith(("inspector.line", "asyncua"))
        ]
        assert len(lines) == 1 and "cannot listen on" in lines[0] and url in lines[0], lines
    finally:
        taken.close()


def test_inspector_line_with_a_plc_that_does_not_answer(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus, silent_endpoint: str, tmp_path: Path
) -> None:
    """The station process itself: `inspector line` with a hung OPC UA PLC prints one line about it, and its Modbus
    output goes on signalling every part."""
    modbus = ModbusServer().start()
    cfg = line_cfg(
        station_config,
        opcua_url=silent_endpoint,
        opcua_mode="client",
        opcua_timeout_s=0.5,
        opcua_nodes={"Reject": "ns=2;s=Line.Reject", "Ready": "ns=2;s=Line.Ready"},
        modbus_url=f"modbus://127.0.0.1:{modbus.port}",
    )
    make_healthy(redis_client, cfg)
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "line", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert wait_for(lambda: modbus.coil(1), 30, 0.1), "the line never went ready on Modbus"
        for seq in (51, 52, 53):
            meta = publish_frame(bus, seq)
            verdict(bus, meta, Decision.FAIL if seq == 52 else Decision.PASS)
            assert wait_for(lambda s=seq: modbus.register(0) == s, 5), f"part {seq} never reached the PLC"
        time.sleep(2)  # more reconnect attempts: still one line
        assert proc.poll() is None, "inspector line died"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        modbus.stop()
    lines = [ln for ln in err.splitlines() if "OPC UA" in ln or "asyncua" in ln]
    assert len(lines) == 1, err
    assert silent_endpoint in lines[0] and "does not answer" in lines[0] and "Traceback" not in err, err
