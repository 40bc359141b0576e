"""systemd notifications: READY=1, STATUS=, RELOADING=1, STOPPING=1 and the watchdog.

systemd-python's ``systemd.daemon.notify`` is used when it imports; otherwise the ``NOTIFY_SOCKET`` datagram
protocol is spoken directly: one ``sendto`` of ``KEY=VALUE`` lines to a unix socket, where a leading ``@``
names a Linux abstract socket. Without NOTIFY_SOCKET (not under systemd) everything here is a no-op.

The watchdog pings only while the pipeline makes progress (``is_alive()`` decides), so a hung inference stops
the pings and systemd restarts the service, while an idle room, whose frames still pass through inference,
keeps them going.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping, Optional

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0  # longest wait for room in the notify socket's queue


def _systemd_notify() -> Optional[Callable[[str], bool]]:
    try:
        from systemd import daemon
    except Exception:
        return None
    return getattr(daemon, "notify", None)


class Notifier:
    """Sends sd_notify messages to the socket named by NOTIFY_SOCKET, if any."""

    def __init__(self, env: Optional[Mapping[str, str]] = None, use_systemd_python: bool = True):
        # systemd-python reads os.environ itself, so it only speaks for the process environment.
        use_lib = use_systemd_python and env is None
        env = os.environ if env is None else env
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self.watchdog_s = _watchdog_seconds(env)
        self._lib = _systemd_notify() if (use_lib and self.socket_path) else None
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    @property
    def via_systemd_python(self) -> bool:
        """Messages go through systemd-python's ``sd_notify`` rather than fallwatch's own socket code."""
        return self._lib is not None

    def notify(self, message: str) -> bool:
        """Send one message (``KEY=VALUE`` lines); False when not under systemd or the send failed."""
        if not self.socket_path:
            return False
        with self._lock:
            try:
                if self._lib is not None:
                    return bool(self._lib(message))
                return self._send(message.encode("utf-8"))
            except OSError as exc:
                if not self._warned:  # the socket vanished (e.g. systemd restarted): say so once
                    log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
                    self._warned = True
                return False

    def _send(self, data: bytes) -> bool:
        path = self.socket_path or ""
        address = "\0" + path[1:] if path.startswith("@") else path
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full receive queue (PID 1 busy) must not stall the pipeline thread for good: give up instead.
            self._sock.settimeout(SEND_TIMEOUT_S)
        self._sock.sendto(data, address)
        return True

    def ready(self, status: Optional[str] = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1; older versions ignore it.
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _watchdog_seconds(env: Mapping[str, str]) -> Optional[float]:
    """WatchdogSec as seconds, when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None
    return value / 1e6 if value > 0 else None


class Watchdog:
    """Pings WATCHDOG=1 every WatchdogSec/2 while ``is_alive()`` says the pipeline makes progress."""

    def __init__(self, notifier: Notifier, is_alive: Callable[[], bool], interval_s: Optional[float] = None):
        self.notifier = notifier
        self.is_alive = is_alive
        self.interval_s = interval_s or (notifier.watchdog_s / 2 if notifier.watchdog_s else None)
        self.pings = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Watchdog":
        if self.interval_s and self.notifier.enabled:
            log.info("systemd watchdog: pinging every %.2fs while inference makes progress", self.interval_s)
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Pinging: systemd asked for a watchdog (WatchdogSec) and the thread is up."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        healthy = True
        while not self._stop.wait(self.interval_s):
            alive = self.is_alive()
            if alive:
                self.notifier.watchdog()
                self.pings += 1
                if not healthy:
                    log.warning("pipeline is making progress again; watchdog pings resume")
            elif healthy:
                log.error(
                    "pipeline made no progress recently; withholding watchdog pings so systemd restarts the service"
                )
            healthy = alive

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
