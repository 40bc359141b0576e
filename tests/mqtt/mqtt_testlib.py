"""Helpers for the MQTT tests: a recording subscriber, test events, a publisher subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from fallwatch.daemon.telemetry.builder import SnapshotBuilder
from fallwatch.daemon.telemetry.snapshot import CameraStats
from paho.mqtt.enums import CallbackAPIVersion

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/waiting.py, also for the publisher subprocess
from waiting import wait_until  # noqa: E402,F401  (the MQTT tests import it from here)

PROC_SCRIPT = HERE / "mqtt_publisher_proc.py"
DEVICE = "testdev"
PREFIX = f"fallwatch/{DEVICE}"


class Sub:
    """A real paho subscriber that records every message: (topic, payload, retain, monotonic time)."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        client_id: Optional[str] = None,
        clean: bool = True,
        tls_ca: Optional[str] = None,
        host: str = "127.0.0.1",
        auth: Optional[tuple[str, str]] = None,
    ):
        # (topic, payload, retained, arrival, dup: the broker's own re-delivery of a message it saw no PUBACK for)
        self.messages: list[tuple[str, bytes, bool, float, bool]] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.topics = topics
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"sub-{uuid.uuid4().hex[:8]}", clean_session=clean
        )
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), f"subscriber could not subscribe to {topics} on port {port}"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain), time.monotonic(), bool(msg.dup)))
            self.cond.notify_all()

    def on(self, topic: str) -> list[bytes]:
        with self.cond:
            return [m[1] for m in self.messages if m[0] == topic]

    def first_copies(self, topic: str) -> list[bytes]:
        """``on(topic)`` less the broker's re-deliveries (DUP set) of messages this subscriber already has: a
        persistent session whose PUBACK was lost in a broker restart gets them again, whatever the publisher did.
        (A publisher's own re-send reaches subscribers as a new message, without DUP: it stays.)"""
        with self.cond:
            seen: set[bytes] = set()
            out = []
            for topic_, payload, _, _, dup in self.messages:
                if topic_ != topic or (dup and payload in seen):
                    continue
                seen.add(payload)
                out.append(payload)
            return out

    def json_on(self, topic: str) -> list[Any]:
        return [json.loads(p) for p in self.on(topic)]

    def wait_for(self, predicate: Callable[["Sub"], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))  # predicate may also depend on time
            return True

    def wait_count(self, topic: str, n: int, timeout: float = 5.0) -> list[bytes]:
        self.wait_for(lambda s: len(s.on(topic)) >= n, timeout)
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


STATUS = {"backend": "cpu", "camera": "ok", "fps": 14.5, "persons": 1, "dropped_frames": 3, "state": "ok"}


def status_figures(
    camera: str = "test-cam", version: str = "0.0-test", status: Optional[dict] = None
) -> SnapshotBuilder:
    """A daemon's one SnapshotBuilder whose figures are ``status`` (STATUS): the backend and the camera's; the
    publisher made with it adds its own."""
    st = STATUS if status is None else status
    cam = CameraStats(
        camera,
        capture=st["camera"],
        fps=st["fps"],
        persons=st["persons"],
        dropped_frames=st["dropped_frames"],
        state=st["state"],
    )
    figures = SnapshotBuilder(version, [camera])
    figures.provide("daemon", lambda now: {"backend": st["backend"], "cameras": {camera: cam}})
    figures.build(time.monotonic())  # as a daemon's is, at start
    return figures


def make_event(kind: str = "fall", n: int = 0) -> dict:
    return {
        "event": kind,
        "id": str(uuid.uuid4()),
        "source": "test-cam",
        "t": 1.5 + n,
        "frame": 20 + n,
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "track": 1,
        "confidence": 0.9,
        "spine_angle_deg": 80.0,
        "angle_change_deg": 70.0,
        "descent_rate": 1.2,
        "box": [10, 20, 200, 300],
    }


class PublisherProc:
    """tests/mqtt/mqtt_publisher_proc.py in a subprocess: a daemon stand-in we can SIGKILL."""

    def __init__(self, config_file: Path, log_file: Path):
        self.log_file = log_file
        self.proc = subprocess.Popen(
            [sys.executable, str(PROC_SCRIPT), str(config_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log_file, "ab"),
            text=True,
            bufsize=1,
        )
        assert self.readline(15) == "ready", f"publisher process did not start; log: {self.log()}"

    def readline(self, timeout: float = 5.0) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        assert result, f"no answer from the publisher process within {timeout}s; log: {self.log()}"
        return result[0].strip()

    def raise_event(self, kind: str = "fall") -> str:
        self.proc.stdin.write(f"event {kind}\n")
        self.proc.stdin.flush()
        answer = self.readline()
        assert answer.startswith("queued "), answer
        return answer.split()[1]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def watch_args(port: int) -> Any:
    """`fallwatch watch --host 127.0.0.1 --port PORT` as the command line parses it (its own defaults)."""
    from fallwatch.daemon.cli.main import build_parser

    return build_parser().parse_args(["watch", "--host", "127.0.0.1", "--port", str(port)])
