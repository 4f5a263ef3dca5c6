"""The labelling session without Qt, on the real labelling service: keys to actions, keys waiting while a call
runs, lease / label / skip / undo, progress, classes learned from the model; ``import gui.state`` loads no Qt."""

from __future__ import annotations

import subprocess
import sys

import redis

from gui.services import Services
from gui.state import KeyKind, LabellingSession, Step
from gui.state.labelling import EMPTY_QUEUE_NOTICE, load_next, perform
from gui.state.rows import HISTORY_TABLE, QUEUE_TABLE, HistoryRow, QueueRow
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.review.open_queue import open_items
from tests.gui.conftest import queue_items

USER = "Quinn Quality"


def _run(session: LabellingSession, services: Services) -> Step | None:
    """What the quality view does with each step, on the calling thread: perform it, report it back."""
    step = session.next_step()
    if step is not None:
        session.finished(step, perform(step, services.labelling, USER))
    return step


def test_gui_state_imports_no_qt() -> None:
    code = (
        "import sys, gui.state, gui.state.rows, gui.state.labelling; "
        "assert not [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'jobs', 'trainer'))], "
        "sorted(m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'jobs', 'trainer')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_keys_wait_while_a_call_runs_and_reach_the_item_on_screen(
    station_config: StationConfig, redis_client: redis.Redis, services: Services
) -> None:
    frame_ids = queue_items(StationBus(redis_client, station_config), services, 3)
    session = LabellingSession(USER, [], good_class="good")
    start = session.start_loading()
    assert session.press("g") is True and session.next_step() is None, "the first item is loading: the key waits"
    assert session.press("x") is False and session.press("") is False and list(session.keys) == [session.keymap["G"]]
    assert session.finished(start, load_next(services.labelling, USER)) is True, "classes come from the model"
    assert session.classes == ["scratch", "spot", "chip"] and session.keymap["1"].label == "scratch"
    first = session.item
    assert first is not None and first.priority == 52 and session.remaining == 2 and not session.busy

    step = _run(session, services)  # the waiting G labels the item on screen, the next one is leased with it
    assert step == Step(KeyKind.LABEL, first.id, "good")
    assert services.labelling.current_label(first.frame_id).label == "good"
    assert session.item is not None and session.item.priority == 51 and session.progress.labelled == 1

    second = session.item
    session.press("s")  # skip: back to the queue, never offered to this labeller again
    session.press("1")
    assert _run(session, services) == Step(KeyKind.SKIP, second.id)
    third = session.item
    assert third is not None and third.id != second.id
    assert _run(session, services) == Step(KeyKind.LABEL, third.id, "scratch")
    assert session.item is None and session.remaining == 1, "the skipped item waits for someone else"
    assert (session.progress.labelled, session.progress.skipped) == (2, 1)

    session.press("z")  # undo the last label: that item comes back to this labeller at once
    assert _run(session, services) == Step(KeyKind.UNDO)
    assert session.item is not None and session.item.id == third.id and session.progress.undone == 1
    assert services.labelling.current_label(third.frame_id) is None
    assert "labelled 2 · skipped 1 · undone 1" in session.progress_text()
    assert sorted([first.frame_id, second.frame_id, third.frame_id]) == sorted(frame_ids)


def test_empty_queue_and_failed_call_drop_the_waiting_keys(services: Services) -> None:
    session = LabellingSession(USER, ["dent"], good_class="good")
    session.finished(session.start_loading(), load_next(services.labelling, USER))
    assert session.item is None and session.remaining == 0
    session.press("1")
    session.press("g")
    assert session.next_step() is None and session.notice == EMPTY_QUEUE_NOTICE and not session.keys
    session.press("z")
    step = session.next_step()
    assert step == Step(KeyKind.UNDO) and session.busy
    session.press("g")
    session.failed()
    assert not session.busy and not session.keys and session.progress.undone == 0
    assert session.key_legend()[0] == ("1", "dent") and session.relabel_choices() == ["dent", "good", "unsure"]


def test_queue_and_history_rows_from_the_labelling_service(
    station_config: StationConfig, redis_client: redis.Redis, services: Services
) -> None:
    queue_items(StationBus(redis_client, station_config), services, 3)
    services.labelling.lease_next(USER)
    rows = [QueueRow.of(i) for i in open_items(services.labelling)]
    assert [QUEUE_TABLE.cells(r)[0] for r in rows] == ["52", "51", "50"]
    assert QUEUE_TABLE.cells(rows[0])[3:5] == ["scratch", "leased"] and rows[1].status == "pending"
    item = services.labelling.lease_next(USER)
    services.labelling.label(item.id, USER, "chip")
    assert len(open_items(services.labelling)) == 2
    history = [HistoryRow.of(r) for r in services.labelling.history(user=USER)]
    assert [HISTORY_TABLE.cells(h)[2:5] for h in history] == [["chip", USER, "current"]]
