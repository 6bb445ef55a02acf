"""The Celery dispatcher gathers the ids of small commits into tasks of many ids, and the sweeper does not
resend a waiting message at every sweep (no broker needed: the publishing is recorded)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hub.tasks.celery_app import CeleryDispatcher


def test_lingering_dispatcher_gathers_ids_and_flushes_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[list[int]] = []
    dispatcher = CeleryDispatcher("memory://", "hub-test", batch=50, linger_ms=200)
    monkeypatch.setattr(dispatcher, "publish", lambda ids: published.append(list(ids)))
    for i in range(10):
        dispatcher([i])  # ten commits of one message each
    deadline = time.monotonic() + 5
    while not published and time.monotonic() < deadline:
        time.sleep(0.01)
    assert published == [list(range(10))]  # one publish for all of them
    dispatcher(range(10, 130))  # more than a batch: published at once, not after the linger
    dispatcher([130])
    dispatcher.close()
    assert [i for ids in published for i in ids] == list(range(131))
    with pytest.raises(RuntimeError):
        dispatcher([131])


def test_publish_splits_into_tasks_of_at_most_batch_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher = CeleryDispatcher("memory://", "hub-test", batch=4)
    sent: list[list[int]] = []
    monkeypatch.setattr(dispatcher.app, "send_task", lambda name, args, producer: sent.append(list(args[0])))
    dispatcher(range(10))
    assert sent == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_sweeper_sends_a_waiting_message_again_only_after_a_pause(tmp_path: Path) -> None:
    """A message still ``received`` is re-dispatched once per ``after_s``, not at every sweep (behind a
    backlog it is queued, not lost), and again once ``after_s`` has passed (its task was lost again)."""
    from hub.config import Settings
    from hub.db import make_engine
    from hub.ingest.service import Intake
    from hub.store.schema import upgrade
    from hub.tasks.worker import Sweeper
    from tests.builders import adt

    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        intake = Intake(engine, Settings(var_dir=tmp_path), dispatch=None)
        ids = [intake.accept(adt(f"SW-{i}", mrn=f"SW{i}").encode()).message_id for i in range(3)]
        sent: list[list[int]] = []
        sweeper = Sweeper(engine, lambda batch: sent.append(list(batch)), interval_s=30.0, after_s=0.3)
        assert sweeper.sweep(0.0) == 3
        assert sweeper.sweep(0.0) == 0  # queued a moment ago: not sent twice
        late = intake.accept(adt("SW-late", mrn="SWL").encode()).message_id
        assert sweeper.sweep(0.0) == 1  # a new one is
        time.sleep(0.35)
        assert sweeper.sweep(0.0) == 4  # after_s later all of them again: their tasks may be lost
        assert sent == [ids, [late], [*ids, late]]
    finally:
        engine.dispose()
