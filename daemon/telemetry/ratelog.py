"""Log floods as a few lines and a count: ``LogLimiter(log).warning(key, msg, *args)``.

Each ``key`` may log ``burst`` lines per ``every_s`` seconds (as journald's RateLimitBurst); further lines in that
window are only counted, and the count is told by the key's first line of a later window (``(+N more like this
in the last 60 s)``), or by ``flush()``, which a periodic thread calls so a flood that stopped still gets its
count. So 200,000 bad commands make a handful of lines, and a problem that goes on is still seen every minute.
Keys are few and chosen by the caller (``"bad command"``), never taken from what a client sent; at most
``MAX_KEYS`` are remembered.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

MAX_KEYS = 256


@dataclass
class _Window:
    start: float
    logged: int = 0
    held: int = 0
    level: int = logging.NOTSET  # the highest level held back


class LogLimiter:
    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 60.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._log = logger
        self.every_s = every_s
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def log(self, level: int, key: str, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` has logged ``burst`` lines in this window; True when it was logged."""
        now = self._clock()
        held, span = 0, 0.0
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.start >= self.every_s:
                held, span = window.held, now - window.start
                window = None
            if window is None:
                if key not in self._windows and len(self._windows) >= MAX_KEYS:
                    self._windows.pop(next(iter(self._windows)))
                window = self._windows[key] = _Window(now)
            if window.logged >= self.burst:
                window.held += 1
                window.level = max(window.level, level)
                return False
            window.logged += 1
        if held:
            msg += " (+%d more like this in the last %.0f s)"
            args = (*args, held, span)
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True

    @property
    def keys_watched(self) -> int:
        """How many keys have a window open now (never more than MAX_KEYS)."""
        with self._lock:
            return len(self._windows)

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.ERROR, key, msg, *args)

    def flush(self) -> None:
        """Tell the count of every key whose window is over with lines held back."""
        now = self._clock()
        due = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now - window.start >= self.every_s:
                    if window.held:
                        due.append((key, window.held, window.level, now - window.start))
                    del self._windows[key]
        for key, held, level, span in due:
            self._log.log(level, "%s: %d more like this in the last %.0f s (not logged)", key, held, span)
