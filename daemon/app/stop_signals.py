"""Signals for `fallwatch run`: SIGTERM/SIGINT stop, SIGHUP reloads, and a stop has a deadline.

The handlers only set flags the daemon's loop checks between frames: a handler runs between any two bytecodes of the
main thread, which may be holding a lock that logging or starting a thread would need again (a deadlock). A thread
started beforehand logs the signal and ends the process should the shutdown not finish in STOP_DEADLINE_S, whatever
blocks (a camera driver, a broker, a model load).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 1.9  # SIGTERM to exit


class Shutdown(Exception):
    """Raised by the stop handler while the daemon is still starting (loading models can take a while)."""


class StopSignals:
    """``stop``/``reload`` are called from the handlers (flags only); ``starting()`` says a stop must interrupt the
    start-up (Shutdown); ``exit_code()`` is the code should the deadline end the process."""

    def __init__(
        self,
        stop: Callable[[], None],
        reload: Callable[[], None],
        starting: Callable[[], bool],
        exit_code: Callable[[], int],
    ):
        self._stop, self._reload, self._starting, self._exit_code = stop, reload, starting, exit_code
        self._done = threading.Event()
        self._wakeup: Optional[tuple[socket.socket, socket.socket]] = None

    def install(self) -> "StopSignals":
        """From the main thread."""

        def on_stop(_signum: int, _frame: Any) -> None:
            self._stop()
            if self._starting():
                raise Shutdown()

        # Python's C-level handler writes each signal's number here at once, even while the main thread is inside a
        # long C call (loading a model) and cannot run the Python handler yet: the deadline is armed regardless.
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        wake_r.settimeout(0.25)
        self._wakeup = (wake_r, wake_w)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload())
        threading.Thread(target=self._deadline, args=(wake_r,), name="stop-deadline", daemon=True).start()
        return self

    def done(self) -> None:
        """The shutdown finished: disarm the deadline, close the wake-up sockets."""
        self._done.set()
        if self._wakeup is None:
            return
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:  # not the main thread
            pass
        for sock in self._wakeup:
            sock.close()
        self._wakeup = None

    def _deadline(self, wake: socket.socket) -> None:
        stops = {int(signal.SIGTERM), int(signal.SIGINT)}
        signum = 0
        while not signum:
            try:
                signum = next((b for b in wake.recv(64) if b in stops), 0)
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                return
            if self._done.is_set():
                return
        log.info("%s received; stopping", signal.Signals(signum).name)
        if not self._done.wait(STOP_DEADLINE_S):
            log.warning("shutdown did not finish in %.1fs; exiting now", STOP_DEADLINE_S)
            logging.shutdown()
            os._exit(self._exit_code())
