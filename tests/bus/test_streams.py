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
    v = Verdict(station="s", frame_id="f1", camera="c", seq=0, part_id="p", captured_at=0.0,
                decision=Decision.PASS, reject=False)
    assert bus.commit_verdicts([(v, ""), (v, "")]) == [True, False]
    assert redis_client.xlen(bus.names.verdicts) == 1
    assert bus.counters() == {"verdicts": 1, "pass": 1}


def test_stream_names_share_one_cluster_slot(station_config) -> None:  # type: ignore[no-untyped-def]
    from inspector.contracts.names import Names

    n = Names("insp", "line1")
    keys = [n.frames, n.verdicts, n.done("x"), n.counters]
    assert all("{line1}" in k for k in keys)
