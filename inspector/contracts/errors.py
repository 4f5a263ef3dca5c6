"""One error base class for the whole station: every error says what went wrong and how to fix it."""

from __future__ import annotations

import errno


class InspectorError(Exception):
    """Base of every error the station raises on purpose.

    ``message`` says what is wrong, naming the thing (a file, a config key, a frame id);
    ``hint`` says what the user can do about it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(InspectorError):
    """A configuration file or value is invalid; the message names the key path."""


class FrameError(InspectorError):
    """One frame cannot be inspected (corrupt image, wrong size, NaN output). Becomes an ERROR verdict."""


class ModelPackageError(InspectorError):
    """A model package is missing, corrupt, or does not match its manifest. It is refused."""


class BackendUnavailable(InspectorError):
    """An optional runtime backend (TensorRT, CUDA) is not installed or has no device."""


class TransportError(InspectorError):
    """Redis cannot be reached after the configured retries."""


class DataError(InspectorError):
    """A training or evaluation data set is missing or malformed."""


class UnsafeInputError(InspectorError):
    """An input was refused because it could execute code or escape its root (pickle, ``../``, bombs)."""


class StorageError(InspectorError):
    """A file or folder of the station cannot be written: full disk, read-only file system, no permission."""


_STORAGE_HINTS = {
    errno.ENOSPC: (
        "the disk holding {path} is full (no space left)",
        "free disk space there, or lower the retention.* bounds, or move station.data_dir to a larger disk",
    ),
    errno.EDQUOT: (
        "the disk quota for {path} is used up",
        "free space in the quota, or lower the retention.* bounds, or move station.data_dir",
    ),
    errno.EROFS: (
        "{path} is on a read-only file system",
        "remount it read-write, or set station.data_dir to a writable folder",
    ),
    errno.EACCES: (
        "{path} is not writable by this user (permission denied)",
        "give this user write access (chown/chmod), or set station.data_dir to a writable folder",
    ),
    errno.EPERM: (
        "{path} may not be changed by this user (operation not permitted)",
        "give this user write access, or set station.data_dir to a writable folder",
    ),
}
STORAGE_ERRNOS = frozenset(_STORAGE_HINTS)


def storage_error(err: OSError, path: object = None) -> StorageError:
    """The one wording of a disk failure: names the path and says whether the disk is full or read-only."""
    where = path if path is not None else (err.filename or "the station data folder")
    text, hint = _STORAGE_HINTS.get(
        err.errno or 0,
        ("{path} cannot be written: " + (err.strerror or str(err)), "check the disk and the folder's permissions"),
    )
    return StorageError(text.format(path=where), hint)
