"""The Celery dispatcher gathers the ids of small commits into tasks of many ids (no broker needed: the
publishing is recorded)."""

from __future__ import annotations

import time

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
