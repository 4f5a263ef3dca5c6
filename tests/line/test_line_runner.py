"""The line runner on a real Redis, against a real MQTT broker and a real pymodbus TCP server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision
from inspector.contracts.names import Names
from inspector.line import LineRunner, MemoryOutput, Signal
from inspector.line.outputs import LineOutput, outputs_from_config
from tests.line.line_peers import (
    ModbusServer,
    MqttListener,
    mqtt_reachable,
    mqtt_url,
    publish_frame,
    publish_verdict,
    wait_for,
)

DEADLINE_MS = 300


def line_cfg(cfg: StationConfig, **line: object) -> StationConfig:
    return cfg.model_copy(update={"line": cfg.line.model_copy(update={"deadline_ms": DEADLINE_MS, **line})})


def make_healthy(r: redis.Redis, cfg: StationConfig, worker_ttl_ms: int | None = None) -> Names:
    names = Names(cfg.redis.prefix, cfg.station.id)
    r.set(names.heartbeat("w1"), "1", px=worker_ttl_ms)
    r.set(names.camera_heartbeat(cfg.camera.id), "1")
    return names


class Running:
    def __init__(self, cfg: StationConfig, outputs: list[LineOutput] | None = None) -> None:
        self.runner = LineRunner(cfg, outputs=outputs)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)

    def __enter__(self) -> LineRunner:
        self.runner._ensure_groups()  # groups exist before the test publishes (they start at "$")
        self.thread.start()
        return self.runner

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        self.thread.join(5)


@pytest.fixture
def modbus() -> Iterator[ModbusServer]:
    server = ModbusServer().start()
    yield server
    server.stop()


@pytest.fixture
def bus(station_config: StationConfig, redis_client: redis.Redis) -> StationBus:
    return StationBus(redis_client, station_config)


def test_mqtt_accept_reject_late_and_missing(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus
) -> None:
    url = mqtt_url()
    if not mqtt_reachable(url):
        pytest.skip(f"no MQTT broker at {url} (start mosquitto or set MQTT_URL)")
    prefix = f"itest{uuid.uuid4().hex[:8]}"
    cfg = line_cfg(station_config, mqtt_url=url, mqtt_topic=prefix)
    make_healthy(redis_client, cfg)
    listener = MqttListener(url, f"{prefix}/#")
    station, cam = cfg.station.id, cfg.camera.id
    decision_topic = f"{prefix}/{station}/{cam}/decision"
    try:
        with Running(cfg, outputs_from_config(cfg)):
            _, payload, retained = listener.next(lambda t, p: t == f"{prefix}/{station}/ready" and p == b"1")

            def decision_for(part_id: str) -> dict[str, object]:
                _, raw, _ = listener.next(lambda t, p: t == decision_topic and json.loads(p)["part_id"] == part_id)
                return json.loads(raw)

            ok = publish_frame(bus, 1)
            publish_verdict(bus, ok, Decision.PASS)
            assert decision_for(ok.part_id)["signal"] == "ACCEPT"

            bad = publish_frame(bus, 2)
            publish_verdict(bus, bad, Decision.FAIL)
            msg = decision_for(bad.part_id)
            assert (msg["signal"], msg["reason"], msg["decision"]) == ("REJECT", "fail", "FAIL")

            missing = publish_frame(bus, 3)
            msg = decision_for(missing.part_id)
            waited = time.time() - missing.captured_at
            assert (msg["signal"], msg["reason"]) == ("REJECT", "no_verdict_by_deadline")
            assert DEADLINE_MS / 1000 <= waited < DEADLINE_MS / 1000 + 0.5

            # a PASS that comes after the deadline: the part was already rejected, and nothing else is sent
            publish_verdict(bus, missing, Decision.PASS)
            # a late PASS for a part whose frame meta the runner never saw is rejected as late
            late = ok.model_copy(
                update={"id": uuid.uuid4().hex, "seq": 4, "part_id": "part-4", "captured_at": time.time() - 1.0}
            )
            publish_verdict(bus, late, Decision.PASS)
            msg = decision_for("part-4")
            assert (msg["signal"], msg["reason"], msg["decision"]) == ("REJECT", "late_verdict", "PASS")
            time.sleep(0.2)
            rest = []
            while not listener.messages.empty():
                rest.append(listener.messages.get())
            assert not [m for m in rest if m[0] == decision_topic and json.loads(m[1])["part_id"] == missing.part_id]
    finally:
        listener.close()
    # on shutdown the retained ready is "0"
    check = MqttListener(url, f"{prefix}/{station}/ready")
    try:
        _, payload, retained = check.next(lambda t, p: True)
        assert payload == b"0" and retained
    finally:
        check.close()


def test_modbus_reject_pulse_ready_and_sequence(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus, modbus: ModbusServer
) -> None:
    cfg = line_cfg(station_config, modbus_url=f"modbus://127.0.0.1:{modbus.port}", reject_pulse_ms=300)
    make_healthy(redis_client, cfg)
    with Running(cfg, outputs_from_config(cfg)) as runner:
        assert wait_for(lambda: modbus.coil(1), 2), "ready coil never went high"
        ok = publish_frame(bus, 41)
        publish_verdict(bus, ok, Decision.PASS)
        assert wait_for(lambda: modbus.register(0) == 41, 2)
        assert not modbus.coil(0)

        bad = publish_frame(bus, 42)
        publish_verdict(bus, bad, Decision.REVIEW)
        assert wait_for(lambda: modbus.coil(0), 2), "reject coil never pulsed"
        assert modbus.register(0) == 42
        assert wait_for(lambda: not modbus.coil(0), 2), "reject pulse never released"
        assert runner.counts == {"accept": 1, "reject": 1}
    assert wait_for(lambda: not modbus.coil(1), 2), "ready coil still high after shutdown"


@pytest.mark.parametrize("how", ["ttl", "delete"])
def test_ready_drops_within_one_second_of_heartbeat_loss(
    station_config: StationConfig, redis_client: redis.Redis, modbus: ModbusServer, how: str
) -> None:
    cfg = line_cfg(station_config, modbus_url=f"modbus://127.0.0.1:{modbus.port}")
    ttl_ms = 600 if how == "ttl" else None
    names = make_healthy(redis_client, cfg, worker_ttl_ms=ttl_ms)
    memory = MemoryOutput()
    with Running(cfg, [memory, *outputs_from_config(cfg)]):
        assert wait_for(lambda: memory.ready is True and modbus.coil(1), 2)
        if how == "delete":
            redis_client.delete(names.heartbeat("w1"))
        gone_at = time.time() if how == "delete" else _wait_gone(redis_client, names.heartbeat("w1"))
        assert wait_for(lambda: memory.ready is False, 1.5)
        dropped_at = memory.ready_history[-1][0]
        assert dropped_at - gone_at < 1.0, f"ready dropped {dropped_at - gone_at:.2f} s after the heartbeat"
        assert "no worker heartbeat" in memory.ready_history[-1][2]
        assert wait_for(lambda: not modbus.coil(1), 1.0), "ready coil did not drop"
        # a worker comes back: ready again
        redis_client.set(names.heartbeat("w2"), "1", px=5000)
        assert wait_for(lambda: memory.ready is True and modbus.coil(1), 2)


def _wait_gone(r: redis.Redis, key: str) -> float:
    assert wait_for(lambda: not r.exists(key), 3, 0.005)
    return time.time()


def test_missing_verdict_rejected_while_redis_answers_nothing(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus
) -> None:
    """Camera silent and no worker: not ready, and a captured part with no verdict is still rejected on time."""
    cfg = line_cfg(station_config)
    memory = MemoryOutput()
    with Running(cfg, [memory]):
        assert wait_for(lambda: memory.ready is False, 1)
        meta = publish_frame(bus, 7)
        assert wait_for(lambda: memory.outcomes, 2)
        out = memory.outcomes[0]
        assert out.part.part_id == meta.part_id and out.signal is Signal.REJECT
        assert out.decided_at - meta.captured_at < DEADLINE_MS / 1000 + 0.2


def _stepped_runner(station_config: StationConfig, r: redis.Redis) -> tuple[LineRunner, MemoryOutput, Names]:
    """A line runner the test steps itself (deadline 1 s, healthy station), its groups made and one turn done."""
    cfg = line_cfg(station_config, deadline_ms=1000)
    names = make_healthy(r, cfg)
    memory = MemoryOutput()
    runner = LineRunner(cfg, outputs=[memory])
    runner._ensure_groups()
    runner.step()
    return runner, memory, names


def test_a_read_whose_reply_was_lost_still_gets_its_signal(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus
) -> None:
    """XREADGROUP ran on the server (a frame and its verdict are pending under the line's consumer name) but its
    reply never reached the runner, and the client's retry asked again: a read with ">" skips them for good.
    The runner re-reads its own pending entries and the part gets its ACCEPT in time (a CI failover run lost
    one part's signal this way: the frame had its PASS, the line never signalled it)."""
    from inspector.line.runner import CONSUMER

    runner, memory, names = _stepped_runner(station_config, redis_client)
    meta = publish_frame(bus, 1)
    publish_verdict(bus, meta, Decision.PASS)
    lost = redis_client.xreadgroup(names.line_group, CONSUMER, {names.frames: ">", names.verdicts: ">"})
    assert sum(len(entries) for _stream, entries in lost) == 2  # the reply the runner never got
    deadline = time.monotonic() + 1.0
    while not memory.outcomes and time.monotonic() < deadline:
        runner.step()
    runner.close()
    assert [(o.part.part_id, o.signal) for o in memory.outcomes] == [(meta.part_id, Signal.ACCEPT)]
    assert redis_client.xpending(names.frames, names.line_group)["pending"] == 0


def test_a_failed_acknowledgement_loses_no_signal(
    station_config: StationConfig, redis_client: redis.Redis, bus: StationBus
) -> None:
    """The master dies between the line's read and its XACK (a failover): the part read in that turn still gets
    its ACCEPT (the decider would refuse its verdict a second time), and the entries are acknowledged later."""
    runner, memory, names = _stepped_runner(station_config, redis_client)
    real_xack = runner.client.xack
    failures = []

    def xack_fails_once(*args: object) -> object:  # a fault in redis-py's call, not a stand-in for Redis
        if not failures and args[0] == names.verdicts:  # after the verdict decided the part
            failures.append(args)
            raise redis.ConnectionError("Connection closed by server.")
        return real_xack(*args)

    runner.client.xack = xack_fails_once  # type: ignore[method-assign]  # the fault: this call fails once
    meta = publish_frame(bus, 1)
    publish_verdict(bus, meta, Decision.PASS)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and (
        not memory.outcomes
        or redis_client.xpending(names.verdicts, names.line_group)["pending"]
        or redis_client.xpending(names.frames, names.line_group)["pending"]
    ):
        runner.step()
    runner.close()
    assert failures, "the fault was not injected"
    assert [(o.part.part_id, o.signal) for o in memory.outcomes] == [(meta.part_id, Signal.ACCEPT)]
    assert redis_client.xpending(names.frames, names.line_group)["pending"] == 0
    assert redis_client.xpending(names.verdicts, names.line_group)["pending"] == 0
