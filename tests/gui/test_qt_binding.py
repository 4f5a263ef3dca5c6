"""The Qt binding must not corrupt reference counts: a station GUI runs for months.

PySide6 6.12.0's ``Signal.emit()`` returns ``True`` without taking a reference, so every emit from Python
drops one reference of ``True``; on Python 3.11 the interpreter aborts once it reaches zero. pyproject
excludes that release; this test fails on any binding with the same bug.
"""

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    value = Signal(int)


def test_signal_emit_keeps_reference_counts(qapp) -> None:  # type: ignore[no-untyped-def]
    emitter = _Emitter()
    emitter.value.connect(lambda v: None)
    before = sys.getrefcount(True), sys.getrefcount(False)
    for i in range(200):
        emitter.value.emit(i)
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert after == before, (
        f"emit() changed the reference counts of True/False by {after[0] - before[0]}/{after[1] - before[1]}"
    )
