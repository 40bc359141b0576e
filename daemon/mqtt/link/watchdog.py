"""The MQTT threads, by name, and the watchdog that keeps them and the client alive.

Once a second the watchdog restarts the client when its network loop stopped or it stayed disconnected past
``mqtt.watchdog_s`` (link/connection.py ``watch``), starts again a worker thread that ended (they catch their own
failures; this is the net below), and flushes the counts of log lines held back by the rate limits.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from fallwatch.daemon.mqtt.link.client import LOGGER, flush_failures
from fallwatch.daemon.mqtt.link.connection import Connection
from fallwatch.daemon.telemetry.ratelog import LogLimiter

log = logging.getLogger(LOGGER)

WATCHDOG_TICK_S = 1.0


class Workers:
    """Named daemon threads (``mqtt-sender``, ``mqtt-heartbeat``, ``mqtt-watchdog``); touched by the thread that
    starts and stops the publisher, and by the watchdog, which only replaces an ended one in place."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self._targets: dict[str, Callable[[], None]] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, targets: dict[str, Callable[[], None]]) -> None:
        self._targets = dict(targets)
        for name in self._targets:
            self._run(name)

    def _run(self, name: str) -> None:
        self._threads[name] = threading.Thread(target=self._targets[name], name=name, daemon=True)
        self._threads[name].start()

    def revive(self) -> None:
        """Start again any worker that ended while the publisher runs (never the calling thread)."""
        me = threading.current_thread().name
        for name, thread in list(self._threads.items()):
            if name != me and not thread.is_alive() and not self.stop.is_set():
                log.error("MQTT watchdog: the %s thread ended; starting it again", name)
                self._run(name)

    def join(self, timeout: float) -> None:
        for thread in self._threads.values():
            thread.join(timeout=timeout)
        self._threads = {}


class Watchdog:
    def __init__(self, connection: Connection, workers: Workers, limited: LogLimiter):
        self._connection = connection
        self._workers = workers
        self._limited = limited  # floods of bad incoming messages: their counts are flushed here

    def loop(self) -> None:
        while not self._workers.stop.wait(WATCHDOG_TICK_S):
            self._limited.flush()
            flush_failures()
            try:
                self._connection.watch(self._limited)
                self._workers.revive()
            except Exception:
                self._limited.log(logging.ERROR, "watchdog", "MQTT watchdog failed", exc_info=True)
