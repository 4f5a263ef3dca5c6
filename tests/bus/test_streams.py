"""Stream codec and bus primitives on a real Redis."""

import pickle

import pytest

from inspector.bus.streams import StationBus, decode_message
from inspector.contracts.errors import UnsafeInputError
from inspector.contracts.messages import Decision, Event, EventType, Verdict


def test_pickle_payload_is_refused_and_not_executed() -> None:
    payload = pickle.dumps({"x": 1})
    with pytest.raises(UnsafeInputError, match="pickle"):
        decode_message(payload)


def test_unknown_kind_and_non_json_are_refused() -> None:
    with pytest.raises(UnsafeInputError, match="unknown message kind"):
        decode_message(b'{"kind": "shell", "cmd": "rm -rf /"}')
    with pytest.raises(UnsafeInputError, match="not a JSON"):
        decode_message(b"not json")


def test_messages_round_trip_with_version() -> None:
    e = Event(station="s", type=EventType.DRIFT_ALARM, message="m", data={"psi": 0.3})
    back = decode_message(e.to_json())
    assert back == e and back.v == 1


def test_commit_is_idempotent_by_frame_id(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    bus = StationBus(redis_client, station_config)
    v = Verdict(
        station="s",
        frame_id="f1",
        camera="c",
        seq=0,
        part_id="p",
        captured_at=0.0,
        decision=Decision.PASS,
        reject=False,
    )
    assert bus.commit_verdicts([(v, ""), (v, "")]) == [True, False]
    assert redis_client.xlen(bus.names.verdicts) == 1
    assert bus.counters() == {"verdicts": 1, "pass": 1}


def test_stream_names_share_one_cluster_slot(station_config) -> None:  # type: ignore[no-untyped-def]
    from inspector.contracts.names import Names

    n = Names("insp", "line1")
    keys = [n.frames, n.verdicts, n.done("x"), n.counters]
    assert all("{line1}" in k for k in keys)


def test_frames_trimmed_before_inspection_are_counted_and_dead_lettered(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    from tests.spine_helpers import publish_parts

    station_config.redis.frames_maxlen = 10
    bus = StationBus(redis_client, station_config)
    bus.ensure_group(bus.names.frames, station_config.worker.group)
    bus.read_new(bus.names.frames, station_config.worker.group, "c", 5, None)  # nothing yet
    publish_parts(bus, 5)
    bus.read_new(bus.names.frames, station_config.worker.group, "c", 5, None)  # 5 delivered
    publish_parts(bus, 12, seed=9)  # 17 in all, room for 10: 7 trimmed, 5 of them delivered, 2 never
    assert redis_client.xlen(bus.names.frames) == 10
    counters = bus.counters()
    assert counters["published"] == 17 and counters["not_inspected"] == 2
    dead = redis_client.xrange(bus.names.dead_letter)
    assert len(dead) == 2 and b"before inspection" in dead[0][1][b"reason"]
