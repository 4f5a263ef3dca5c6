"""Hostile inputs are refused with a clear error, nothing they carry is executed, nothing is written outside
its root: decompression bombs, truncated / mislabeled / huge images, ``../`` names, pickle payloads in a
stream message and in an RQ job."""

from __future__ import annotations

import io
import pickle
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.bus.streams import StationBus
from inspector.contracts.errors import FrameError, ModelPackageError, UnsafeInputError
from inspector.contracts.messages import Decision, FrameMeta
from inspector.contracts.names import Names
from inspector.models.decode import decode_image, encode_image
from inspector.worker import Worker, load_model
from tests.faults.harness import proc_mem_kb, station
from tests.faults.reconcile import CameraLedger, reconcile

pytestmark = pytest.mark.faults


class _Marker:
    """Unpickling this creates ``path`` (open(path, 'w')): the test asserts the file never appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.path), "w"))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A few kB PNG whose header declares width x height (grey): decoding it would need GBs."""
    row = b"\x00" + b"\x00" * width
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_huge_header(dim: int = 65_000) -> bytes:
    """A valid small JPEG whose SOF0 header is rewritten to declare dim x dim."""
    data = bytearray(encode_image(np.full((16, 16, 3), 90, np.uint8), "jpeg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", dim, dim)
    return bytes(data)


def _hostile_frames() -> dict[str, tuple[bytes, str]]:
    good = encode_image(np.full((120, 120, 3), 128, np.uint8), "jpeg")
    png = encode_image(np.full((120, 120, 3), 128, np.uint8), "png")
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, "PNG")  # 64 Mpx of zeros in ~60 kB: over max_image_pixels
    return {
        "png_bomb_60k": (png_bomb(), "png"),
        "png_zeros_64mpx": (buf.getvalue(), "png"),
        "jpeg_huge_header": (jpeg_huge_header(), "jpeg"),
        "truncated_jpeg": (good[: len(good) // 2], "jpeg"),
        "truncated_png": (png[: len(png) - 20], "png"),
        "png_labelled_jpeg": (png, "jpeg"),
        "text_labelled_png": (b"GIF89a not an image at all", "png"),
        "empty": (b"", "jpeg"),
    }


@pytest.mark.parametrize("name", sorted(_hostile_frames()))
def test_decode_refuses_hostile_image(name: str) -> None:
    data, enc = _hostile_frames()[name]
    before = proc_mem_kb_self()
    t0 = time.perf_counter()
    with pytest.raises(FrameError) as err:
        decode_image(data, enc, max_pixels=40_000_000)
    ms = (time.perf_counter() - t0) * 1000
    grew = proc_mem_kb_self() - before
    print(f"HOSTILE {name}: {len(data)} B refused in {ms:.1f} ms, RSS +{grew / 1024:.0f} MB: {err.value.message[:90]}")
    assert err.value.message and err.value.hint
    assert grew < 200 * 1024, "the refusal allocated the bomb"


def proc_mem_kb_self() -> int:
    import os

    return proc_mem_kb(os.getpid()).get("VmHWM", 0)


def test_worker_turns_hostile_frames_and_pickle_into_outcomes(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = station(redis_url, tmp_path / "st", tiny_package)
    names = Names(cfg.redis.prefix, cfg.station.id)
    bus = StationBus(redis_client, cfg)
    w = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="hostile")
    ledger = CameraLedger()
    for seq, (name, (data, enc)) in enumerate(sorted(_hostile_frames().items())):
        meta = FrameMeta(
            station=cfg.station.id, camera="cam0", seq=seq, part_id=name, captured_at=time.time(), encoding=enc
        )
        bus.publish_frame(meta, data)
        ledger.ok(meta)
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Marker(marker))
    redis_client.xadd(names.frames, {b"m": payload, b"img": b""})  # a pickle where the JSON message belongs
    redis_client.xadd(names.frames, {b"m": b"not json at all", b"img": b""})
    w.run(idle_exit_s=1.5)
    rep = reconcile(redis_client, names, ledger, deadline_s=cfg.line.deadline_ms / 1000)
    by_part = {
        v.part_id: v
        for v, _ in __import__("tests.faults.reconcile", fromlist=["x"]).read_verdict_entries(redis_client, names)
    }
    for name in _hostile_frames():
        v = by_part[name]
        print(f"HOSTILE_FRAME {name}: {v.decision.value} reject={v.reject} {v.error}")
        assert v.decision is Decision.ERROR and v.reject and v.error
    reasons = [f[b"reason"].decode() for _e, f in redis_client.xrange(names.dead_letter)]
    print("HOSTILE_DEAD_LETTERS", reasons)
    assert rep.unreadable_dead_letters == 2 and any("pickle" in r for r in reasons)
    assert not marker.exists(), "the pickle payload was executed"


@pytest.mark.parametrize("raw", [b'{"kind": "verdict", "station": "x"}', b'{"kind": "frame", "station": "x"}'])
def test_schema_invalid_message_is_dead_lettered_not_a_crash(
    redis_url,
    redis_client,
    tiny_package,
    tmp_path,  # type: ignore[no-untyped-def]
    raw: bytes,
) -> None:
    cfg = station(redis_url, tmp_path / "st", tiny_package)
    names = Names(cfg.redis.prefix, cfg.station.id)
    w = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="schema")
    redis_client.xadd(names.frames, {b"m": raw, b"img": b""})
    w.run(idle_exit_s=1.0)
    assert redis_client.xlen(names.dead_letter) == 1
    assert not redis_client.xpending(names.frames, cfg.worker.group)["pending"]


def test_pickle_payload_in_rq_job_is_refused(redis_url, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rq import Queue
    from rq.job import Job

    jobs_queues = pytest.importorskip("jobs.queues")
    marker = tmp_path / "PWNED-RQ"
    cfg = station(redis_url, tmp_path / "st", None)
    q: Queue = jobs_queues.station_queue(cfg, redis_client)
    job = q.enqueue("builtins.print", "harmless")  # a real job, then its payload is swapped for a pickle
    evil = zlib.compress(pickle.dumps((_Marker(marker), None, (), {})))
    redis_client.hset(job.key, "data", evil)
    with pytest.raises(Exception) as err:  # noqa: B017 - rq wraps the serializer's refusal
        Job.fetch(job.id, connection=redis_client, serializer=jobs_queues.SERIALIZER).func_name  # noqa: B018
    print(f"RQ_PICKLE refused: {type(err.value).__name__}: {str(err.value)[:120]}")
    assert not marker.exists(), "the pickled job payload was executed"
    from rq import SimpleWorker

    worker = SimpleWorker([q], connection=redis_client, serializer=jobs_queues.SERIALIZER)
    try:
        worker.work(burst=True, max_jobs=1)
    except Exception as exc:  # noqa: BLE001 - what matters is that nothing ran
        print(f"RQ_PICKLE worker refused: {type(exc).__name__}: {str(exc)[:120]}")
    assert not marker.exists(), "an RQ worker executed the pickled job payload"


def test_archive_refuses_dot_dot_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from inspector.archive import Archive

    root = tmp_path / "archive"
    arc = Archive(root)
    sha = arc.put(encode_image(np.zeros((8, 8, 3), np.uint8), "png"), "png")
    for evil in ("../../etc/passwd", "../" + sha, sha[:10] + "/../../x", "/etc/passwd", "..", "a" * 64 + "/.."):
        with pytest.raises(UnsafeInputError) as err:
            arc.path(evil)
        print(f"ARCHIVE {evil!r}: {err.value.message[:90]}")
    for ext in ("../png", "png/../../x"):
        with pytest.raises((UnsafeInputError, ValueError)):
            arc.put(b"\x89PNG\r\n\x1a\nxx", ext)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]
    assert not outside, f"written outside the archive root: {outside}"


def test_package_refuses_dot_dot_and_links_out(tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from tests.faults.test_model_faults import _escaping

    pkg = _escaping(shutil.copytree(tiny_package, tmp_path / "p1" / "pkg"))
    with pytest.raises(ModelPackageError, match="escapes the package folder"):
        load_package_(pkg)
    linked = shutil.copytree(tiny_package, tmp_path / "p2")
    secret = tmp_path / "secret.onnx"
    shutil.copy(linked / "model.onnx", secret)
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(secret)
    with pytest.raises(ModelPackageError, match="outside the package"):
        load_package_(linked)


def load_package_(path: Path):  # type: ignore[no-untyped-def]
    from inspector.runtime.package import load_package

    return load_package(path)
