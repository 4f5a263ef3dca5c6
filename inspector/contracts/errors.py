"""One error base class for the whole station: every error says what went wrong and how to fix it."""

from __future__ import annotations


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
