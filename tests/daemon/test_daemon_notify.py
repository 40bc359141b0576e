"""sd_notify against a real unix datagram socket: READY, STATUS, WATCHDOG, and no WATCHDOG while inference hangs."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import pytest
from fallwatch.config.schema import Config
from fallwatch.daemon.app.sd_notify import Notifier, Watchdog
from fallwatch.daemon.app.service import Daemon
from fallwatch.daemon.capture.reader import Capture
from fallwatch.daemon.capture.sources import Source
from fallwatch.daemon.telemetry.logsetup import setup_logging
from fallwatch.pose.types import PoseResult
from waiting import wait_until


class NotifySocket:
    """What systemd does: a unix datagram socket whose path goes into NOTIFY_SOCKET."""

    def __init__(self, address: str):
        self.address = address
        self.marks = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, text: str, timeout: float = 10.0, after: float = 0.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, msg in list(self.messages):
                if at >= after and text in msg:
                    return msg
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} within {timeout}s; got {[m for _, m in self.messages]}")

    def mark(self) -> str:
        """Send a marker datagram to this very socket and wait for it. Datagrams queue in order, so whatever is
        received after the marker was sent after this call, however late the reader thread runs on a busy machine."""
        self.marks += 1
        name = f"TEST-MARK={self.marks}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(name.encode(), self.address)
        self.wait_for(name)
        return name

    def count_after(self, text: str, mark: str) -> int:
        received = [msg for _, msg in list(self.messages)]
        return sum(text in msg for msg in received[received.index(mark) + 1 :])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def test_raw_protocol_ready_and_status(notify_socket: NotifySocket, tmp_path: Path) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    assert notifier.enabled
    assert notifier.ready("12.5 fps on cpu")
    assert notifier.status("warming up")
    assert notifier.watchdog()
    assert notify_socket.wait_for("READY=1") == "READY=1\nSTATUS=12.5 fps on cpu"
    notify_socket.wait_for("STATUS=warming up")
    notify_socket.wait_for("WATCHDOG=1")
    notifier.close()


def test_abstract_socket() -> None:
    name = f"fallwatch-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        notifier = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert server.recv(100) == b"READY=1"
    finally:
        server.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled and notifier.ready() is False and notifier.watchdog() is False
    assert Watchdog(notifier, lambda: True).start().running is False


def test_watchdog_settings_from_environment() -> None:
    assert Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}).watchdog_s == 30.0
    assert (
        Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s
        == 0.4
    )
    # The watchdog was meant for another process (e.g. a parent shell script).
    assert Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "junk"}).watchdog_s is None


def test_send_failure_is_logged_once_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.app.sd_notify"):
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert sum("sd_notify" in r.getMessage() for r in caplog.records) == 1


def test_a_receiver_that_does_not_read_cannot_block_the_pipeline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A unix datagram socket queues only net.unix.max_dgram_qlen messages (10 by default); past that a blocking
    # sendto waits until the receiver reads. The pipeline thread sends STATUS=, so a busy or wedged PID 1 used
    # to freeze detection itself. Sends now give up after a bounded wait.
    path = str(tmp_path / "unread.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    notifier = Notifier(env={"NOTIFY_SOCKET": path})
    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.extend(notifier.status(f"n {i}") for i in range(14)), daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.app.sd_notify"):
            sender.start()
            sender.join(20)
            assert not sender.is_alive(), f"sd_notify blocked after {len(results)} messages"
        assert len(results) == 14 and results[0] is True and results[-1] is False
        assert sum("sd_notify" in r.getMessage() for r in caplog.records) == 1
        receiver.setblocking(False)
        assert receiver.recv(100) == b"STATUS=n 0"
    finally:
        receiver.close()
        notifier.close()


def test_systemd_python_path_when_installed(
    notify_socket: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("systemd.daemon")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    notifier = Notifier()
    assert notifier.via_systemd_python
    assert notifier.ready("via systemd-python")
    notify_socket.wait_for("STATUS=via systemd-python")


# -- the daemon: real Pipeline and rules, a fake engine at the pipeline boundary that can be made to hang ------
class StallableEngine:
    """Stands in for PoseEngine: an empty room (no persons) at a few ms per frame, until ``stall`` is set."""

    backend = "cpu"
    backend_reason = "test engine"

    def __init__(self) -> None:
        self.stall = threading.Event()
        self.release = threading.Event()
        self.frames = 0

    def make_tracker(self) -> SimpleNamespace:
        return SimpleNamespace(s=SimpleNamespace(ignore_zones=()))  # (its tracks are this stand-in's business)

    def process(self, frame_rgb: np.ndarray, t: float, tracker: object = None) -> PoseResult:
        if self.stall.is_set():
            self.release.wait(30)  # a hung inference (a wedged TPU, a deadlocked delegate)
        self.frames += 1
        time.sleep(0.003)
        return PoseResult(persons=[], backend="cpu", stage_ms={"total": 3.0})


class FakeCamera(Source):
    """A 30 fps camera showing an empty room."""

    name = "fake-camera"
    bgr = False
    fps = 30.0

    def open(self) -> None:
        self._next = time.monotonic()

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        self._next += 1 / 30
        time.sleep(max(0.0, self._next - time.monotonic()))
        return np.full((96, 128, 3), 80, np.uint8), time.monotonic()


def start_daemon(socket_path: str, watchdog_usec: int) -> tuple[Daemon, threading.Thread, StallableEngine, list]:
    """The daemon, its thread, its engine, and the list the watchdog thread appends each liveness check's answer to
    (so a test can wait for checks to happen rather than for time to pass)."""
    cfg = Config.model_validate({"mqtt": {"enabled": False}, "debug": {"enabled": False}})
    engine = StallableEngine()
    notifier = Notifier(env={"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": str(watchdog_usec)})
    daemon = Daemon(cfg, engine=engine, capture=Capture(FakeCamera()), notifier=notifier)
    checks: list[bool] = []
    is_alive = daemon.is_alive

    def counted_is_alive() -> bool:
        alive = is_alive()
        if threading.current_thread().name == "watchdog":
            checks.append(alive)
        return alive

    daemon.is_alive = counted_is_alive  # what the watchdog is given at start
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    return daemon, thread, engine, checks


def test_ready_status_and_watchdog_stop_when_inference_stalls(
    notify_socket: NotifySocket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.app.sd_notify")
    daemon, thread, engine, checks = start_daemon(str(tmp_path / "notify.sock"), watchdog_usec=400_000)
    try:
        ready = notify_socket.wait_for("READY=1", timeout=30)
        assert "STATUS=" in ready and "fps" in ready and "cpu" in ready
        status = notify_socket.wait_for("STATUS=", timeout=30, after=notify_socket.messages[0][0] + 0.001)
        assert "fps on cpu" in status

        # An idle room: frames flow through inference, nobody in view, and the pings keep coming.
        flowing, frames = notify_socket.mark(), engine.frames
        assert wait_until(lambda: notify_socket.count_after("WATCHDOG=1", flowing) >= 3, 30), notify_socket.messages
        assert engine.frames > frames

        # Inference hangs: once no frame got through for the stall limit (0.4 s), the pings stop.
        engine.stall.set()
        assert wait_until(lambda: "withholding watchdog pings" in caplog.text, 30), caplog.text
        stalled, seen = notify_socket.mark(), len(checks)
        assert wait_until(lambda: len(checks) >= seen + 3, 30), "the watchdog stopped checking"
        assert not any(checks[seen:]) and notify_socket.count_after("WATCHDOG=1", stalled) == 0
        assert thread.is_alive()

        # It recovers: pings come back.
        engine.stall.clear()
        engine.release.set()
        released = notify_socket.mark()
        assert wait_until(lambda: notify_socket.count_after("WATCHDOG=1", released) >= 1, 30)
        assert wait_until(lambda: "watchdog pings resume" in caplog.text, 30)  # logged just after the ping
    finally:
        engine.release.set()
        daemon.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    notify_socket.wait_for("STOPPING=1", timeout=10)


def test_camera_outage_is_not_a_hang(notify_socket: NotifySocket, tmp_path: Path) -> None:
    """A camera being reopened keeps the watchdog fed (the daemon retries on its own); only a stuck loop stops it."""

    class FlakyCamera(FakeCamera):
        down = threading.Event()

        def open(self) -> None:
            if self.down.is_set():
                raise OSError("unplugged")
            super().open()

        def read(self) -> Optional[tuple[np.ndarray, float]]:
            return None if self.down.is_set() else super().read()

    cfg = Config.model_validate({"mqtt": {"enabled": False}, "debug": {"enabled": False}})
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "600000"})
    camera = FlakyCamera()
    capture = Capture(camera, reopen_min_s=0.05, reopen_max_s=0.1)
    daemon = Daemon(cfg, engine=StallableEngine(), capture=capture, notifier=notifier)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        notify_socket.wait_for("READY=1", timeout=30)
        camera.down.set()
        assert wait_until(lambda: capture.state == "reopening" and capture.reopens >= 2, 30)
        reopening = notify_socket.mark()
        assert wait_until(lambda: notify_socket.count_after("WATCHDOG=1", reopening) >= 3, 30), notify_socket.messages
        assert capture.state == "reopening", "the camera stayed unplugged all along"
    finally:
        daemon.request_stop()
        thread.join(10)


def test_journal_logging_without_systemd_python(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # as if systemd-python were not installed
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert setup_logging("WARNING") == "journal (stderr)"
        logging.getLogger("fallwatch.test").error("boom")
        logging.getLogger("fallwatch.test").info("hidden below WARNING")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capfd.readouterr().err
    assert "<3>fallwatch.test: boom" in err and "hidden" not in err


def test_stderr_logging_outside_systemd(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert setup_logging("debug") == "stderr"
        logging.getLogger("fallwatch.test").debug("details")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert " DEBUG fallwatch.test: details" in capfd.readouterr().err


def test_journal_handler_when_systemd_python_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    journal = pytest.importorskip("systemd.journal")
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert setup_logging("INFO") == "journal"
        assert isinstance(root.handlers[0], journal.JournalHandler) and len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
