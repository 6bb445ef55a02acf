"""A task that runs every ``interval_s`` on a daemon thread of its own until stopped (the sweeper)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses implement :meth:`tick`; :meth:`first` runs once at start (default: nothing) and
    :meth:`last` once at stop (default: nothing). A failing tick is logged, and the next one runs."""

    name = "hub-periodic"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def first(self) -> None:
        """Runs once when the thread starts."""

    def tick(self) -> None:
        raise NotImplementedError

    def last(self) -> None:
        """Runs once when the thread is stopped."""

    def _run(self) -> None:
        try:
            self.first()
        except Exception:
            log.exception("%s: first run failed", self.name)
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                log.exception("%s failed; trying again in %.1f s", self.name, self.interval_s)
        try:
            self.last()
        except Exception:
            log.exception("%s: last run failed", self.name)
