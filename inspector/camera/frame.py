"""What every frame source is and yields (``inspector.camera.sources`` opens them; ``inspector.camera.genicam``
is one of them and imports these, not the module that opens it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class Capture:
    image: np.ndarray | None = None  # RGB uint8, when the source decodes
    encoded: bytes | None = None  # encoded bytes, when the source has them already
    encoding: str = "jpeg"
    truth: str | None = None
    name: str | None = None


class FrameSource:
    def read(self) -> Capture | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Capture]:
        while (cap := self.read()) is not None:
            yield cap


__all__ = ["Capture", "FrameSource"]
