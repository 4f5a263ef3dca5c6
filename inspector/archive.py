"""Content-addressed image archive: ``<root>/ab/cd/<sha256>.<ext>``.

Writes are atomic (temp file in the same folder, fsync, ``os.replace``, fsync of the folder), so a
killed process leaves either the whole file or none (plus, at worst, a ``.tmp-*`` file that
``sweep_temp()`` removes). Keys are validated as 64 lower-case hex digits and extensions against an
allow-list, and every path is resolved and checked to lie under the root: nothing a frame id, key or
name contains can make the archive read or write outside its root. A write that fails on the disk (full,
read-only, no permission, I/O error) raises :class:`~inspector.contracts.errors.StorageError` naming the path.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from inspector.contracts.errors import InspectorError, UnsafeInputError, storage_error

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
EXTENSIONS = ("jpg", "png", "bmp", "tif", "webp", "raw")
ALIASES = {"jpeg": "jpg", "tiff": "tif"}
TMP_PREFIX = ".tmp-"


def normalise_ext(ext: str) -> str:
    e = ALIASES.get(ext.lower().lstrip("."), ext.lower().lstrip("."))
    if e not in EXTENSIONS:
        raise UnsafeInputError(f"image extension {ext!r} is not allowed", f"use one of {', '.join(EXTENSIONS)}")
    return e


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise UnsafeInputError(f"archive key {sha!r} is not a sha256 hex digest", "keys are 64 lower-case hex digits")
    return sha


class ImageNotFound(InspectorError):
    """No archived image has this key."""


class Archive:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:  # full or read-only disk: put() creates the folders, or names the failure, later
            pass

    @classmethod
    def for_data_dir(cls, data_dir: str | Path) -> Archive:
        return cls(Path(data_dir) / "archive")

    def _inside(self, p: Path) -> Path:
        resolved = p.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafeInputError(f"path {p} escapes the archive root {self.root}", "archive keys are sha256 digests")
        return resolved

    def _folder(self, sha: str) -> Path:
        check_sha(sha)
        return self._inside(self.root / sha[:2] / sha[2:4])

    def _candidates(self, sha: str) -> Iterator[Path]:
        folder = self._folder(sha)
        for ext in EXTENSIONS:
            yield self._inside(folder / f"{sha}.{ext}")

    def put(self, data: bytes, ext: str = "png") -> str:
        """Store ``data`` (atomic, durable); returns its sha256. Storing the same bytes twice is a no-op."""
        e = normalise_ext(ext)
        sha = hashlib.sha256(data).hexdigest()
        folder = self._folder(sha)
        target = self._inside(folder / f"{sha}.{e}")
        if target.is_file():
            return sha
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder, target, data)
        except OSError as err:
            raise storage_error(err, err.filename or folder) from err
        return sha

    def path(self, sha: str) -> Path:
        """The file of an archived image; raises ImageNotFound."""
        for p in self._candidates(sha):
            if p.is_file():
                return p
        raise ImageNotFound(f"no archived image {sha}", "the frame was not archived, or the archive was moved")

    def get(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()

    def exists(self, sha: str) -> bool:
        try:
            self.path(sha)
        except ImageNotFound:
            return False
        return True

    def keys(self) -> Iterator[str]:
        for p in self.root.glob("??/??/*"):
            stem = p.name.split(".", 1)[0]
            if SHA_RE.match(stem) and not p.name.startswith(TMP_PREFIX):
                yield stem

    def sweep_temp(self, older_than_s: float = 3600) -> int:
        """Remove temp files left by killed writers; returns how many."""
        cutoff, n = time.time() - older_than_s, 0
        for p in self.root.glob(f"??/??/{TMP_PREFIX}*"):
            if p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)
                n += 1
        return n


def _atomic_write(folder: Path, target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
