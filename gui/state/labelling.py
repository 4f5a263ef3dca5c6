"""The labelling session without Qt: keys to actions, the keys waiting while a call runs, lease / skip / label /
undo transitions and the labeller's progress.

Keys: 1..9 a defect class each, G good, U unsure, S skip, Z undo. The quality view forwards typed keys to
:meth:`LabellingSession.press`, runs each :class:`Step` the session hands out with :func:`perform` off the GUI
thread (the next item is leased in the same call that stores the label, so it appears at once) and reports
back with :meth:`LabellingSession.finished` or :meth:`LabellingSession.failed`. Keys typed while a call runs
wait in order: never lost, never applied to another item than the one on screen when their turn comes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from inspector.contracts.labels import GOOD_LABEL, UNSURE_LABEL

if TYPE_CHECKING:
    from inspector.review.labelling import LabellingService, ReviewItemView

EMPTY_QUEUE_NOTICE = "Nothing to label: the queue is empty."


class KeyKind(StrEnum):
    LABEL = "label"
    SKIP = "skip"
    UNDO = "undo"


@dataclass(frozen=True)
class KeyAction:
    kind: KeyKind
    label: str | None = None


def label_keymap(defect_classes: list[str]) -> dict[str, KeyAction]:
    """1..9 a defect class each, G good, U unsure, S skip, Z undo (keys are upper-case characters)."""
    keys = {str(i + 1): KeyAction(KeyKind.LABEL, c) for i, c in enumerate(defect_classes[:9])}
    keys.update(
        {
            "G": KeyAction(KeyKind.LABEL, GOOD_LABEL),
            "U": KeyAction(KeyKind.LABEL, UNSURE_LABEL),
            "S": KeyAction(KeyKind.SKIP),
            "Z": KeyAction(KeyKind.UNDO),
        }
    )
    return keys


def defect_classes_for(
    configured: list[str], class_probs: dict[str, float] | None, good: str = GOOD_LABEL
) -> list[str]:
    """The classes on keys 1..9: configured ones, else the model's non-good classes in their order."""
    if configured:
        return list(configured)
    return [c for c in (class_probs or {}) if c != good][:9]


@dataclass
class LabelProgress:
    labelled: int = 0
    skipped: int = 0
    undone: int = 0

    def count(self, kind: KeyKind) -> None:
        if kind is KeyKind.LABEL:
            self.labelled += 1
        elif kind is KeyKind.SKIP:
            self.skipped += 1
        else:
            self.undone += 1

    def text(self, remaining: int | None) -> str:
        left = "?" if remaining is None else str(remaining)
        return f"labelled {self.labelled} · skipped {self.skipped} · undone {self.undone} · {left} waiting"


@dataclass(frozen=True)
class Step:
    """One background call: ``kind`` None only leases the next item; otherwise label / skip ``item_id`` or undo."""

    kind: KeyKind | None = None
    item_id: int | None = None
    label: str | None = None


@dataclass(frozen=True)
class Loaded:
    """What a background call hands back: the item now leased to the labeller, its picture, items waiting."""

    item: ReviewItemView | None
    image: bytes | None
    remaining: int


def load_next(service: LabellingService, user: str) -> Loaded:
    """Lease the next item for ``user`` with its picture (a picture that cannot be read: the item without it)."""
    item = service.lease_next(user)
    image = None
    if item is not None and item.image_sha256:
        try:
            image = service.image(item)
        except Exception:  # noqa: BLE001 - show the item without its picture
            image = None
    return Loaded(item, image, int(service.queue_stats().get("pending", 0)))


def perform(step: Step, service: LabellingService, user: str) -> Loaded:
    """Run ``step`` against the labelling service (off the GUI thread), then lease the next item."""
    if step.kind is KeyKind.LABEL:
        service.label(int(step.item_id or 0), user, step.label or "")
    elif step.kind is KeyKind.SKIP:
        service.skip(int(step.item_id or 0), user)
    elif step.kind is KeyKind.UNDO:
        service.undo_last(user)
    return load_next(service, user)


class LabellingSession:
    """One labeller's session: the item on screen, the keys waiting, whether a call runs, the progress."""

    def __init__(self, user: str, configured_classes: list[str], good_class: str = GOOD_LABEL) -> None:
        self.user = user
        self.configured = list(configured_classes)
        self.good_class = good_class
        self.classes = list(configured_classes)
        self.keymap = label_keymap(self.classes)
        self.progress = LabelProgress()
        self.keys: deque[KeyAction] = deque()
        self.busy = False
        self.item: ReviewItemView | None = None
        self.remaining: int | None = None
        self.notice: str | None = None

    def press(self, text: str) -> bool:
        """Queue the action of a typed key; False when the key means nothing here."""
        action = self.keymap.get(text.upper()) if text else None
        if action is None:
            return False
        self.keys.append(action)
        return True

    def start_loading(self) -> Step:
        """Lease the next item (at start, and after a failed call)."""
        self.busy = True
        return Step()

    def next_step(self) -> Step | None:
        """The call for the oldest waiting key; None while a call runs, without keys, or when the queue is empty
        (then every waiting key is dropped and :attr:`notice` says why)."""
        self.notice = None
        if self.busy or not self.keys:
            return None
        action = self.keys.popleft()
        if action.kind is KeyKind.UNDO:
            step = Step(KeyKind.UNDO)
        elif self.item is None:
            self.keys.clear()
            self.notice = EMPTY_QUEUE_NOTICE
            return None
        else:
            step = Step(action.kind, self.item.id, action.label)
        self.busy = True
        return step

    def finished(self, step: Step, loaded: Loaded) -> bool:
        """A call ended well: count it, take the item it leased. True when the classes on keys 1..9 changed."""
        if step.kind is not None:
            self.progress.count(step.kind)
        self.item, self.remaining, self.busy = loaded.item, loaded.remaining, False
        return self._adopt_classes(loaded.item)

    def failed(self) -> None:
        """A call failed: nothing is counted, the waiting keys are dropped (they were meant for that item)."""
        self.busy = False
        self.keys.clear()

    def _adopt_classes(self, item: ReviewItemView | None) -> bool:
        if self.configured or item is None:
            return False
        found = defect_classes_for([], item.class_probs, self.good_class)
        if not found or found == self.classes:
            return False
        self.classes = found
        self.keymap = label_keymap(found)
        return True

    def key_legend(self) -> list[tuple[str, str]]:
        """(key, meaning) in the order the help line shows them."""
        return [(str(i + 1), c) for i, c in enumerate(self.classes[:9])] + [
            ("G", GOOD_LABEL),
            ("U", UNSURE_LABEL),
            ("S", "skip"),
            ("Z", "undo"),
        ]

    def relabel_choices(self) -> list[str]:
        return [*self.classes, GOOD_LABEL, UNSURE_LABEL]

    def progress_text(self) -> str:
        return f"Labeller <b>{self.user}</b> · {self.progress.text(self.remaining)}"
