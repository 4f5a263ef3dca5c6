"""Record every part verdict of the parts stream (``parts.views``) in ``part_verdicts``, exactly once per part.

The same consumer as :class:`~inspector.recording.recorder.VerdictRecorder` (consumer group ``store``, batched
``INSERT .. ON CONFLICT (part_id) DO NOTHING``, XACK only after the commit, a dead recorder's entries taken
over with XAUTOCLAIM), on the parts stream the line process writes. It runs beside the verdict recorder when
``parts.views`` is set (a thread of the worker process, or of ``python -m inspector.recording``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import redis
from sqlalchemy.orm import Session

from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import PartVerdict
from inspector.contracts.names import Names
from inspector.recording.recorder import VerdictRecorder
from inspector.store.db import Store
from inspector.store.part_verdicts import insert_part_verdicts


class PartRecorder(VerdictRecorder):
    role: ClassVar[ConsumerRole] = ConsumerRole.PART_RECORDER
    message_type = PartVerdict

    def __init__(self, cfg: StationConfig, client: redis.Redis, store: Store, consumer: str) -> None:
        super().__init__(cfg, client, store, consumer, stream=Names(cfg.redis.prefix, cfg.station.id).parts)

    def _insert(self, s: Session, rows: list[Any]) -> int:
        return insert_part_verdicts(s, rows)
