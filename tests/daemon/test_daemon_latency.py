"""Inference slower than the camera: the daemon works on the newest frame, drops the rest, latency stays one inference."""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np

from fallwatch.config.schema import Config
from fallwatch.daemon.capture import Capture, Source
from fallwatch.daemon.notify import Notifier
from fallwatch.daemon.service import Daemon
from fallwatch.pose.types import PoseResult

INFERENCE_S = 0.12  # ~8 fps of "inference" against a 30 fps camera


class SlowEngine:
    backend = "cpu"
    backend_reason = "test"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, frame_rgb: np.ndarray, t: float) -> PoseResult:
        self.seen.append(int(frame_rgb[0, 0, 0]))
        time.sleep(INFERENCE_S)
        return PoseResult(persons=[], backend="cpu", stage_ms={"total": INFERENCE_S * 1000})


class CountingCamera(Source):
    """30 fps; each frame carries its number (mod 256) in its pixels."""

    name = "counting-camera"
    bgr = False

    def open(self) -> None:
        self.n = 0
        self._next = time.monotonic()

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        self._next += 1 / 30
        time.sleep(max(0.0, self._next - time.monotonic()))
        self.n += 1
        return np.full((64, 64, 3), self.n % 256, np.uint8), time.monotonic()


def test_slow_inference_drops_old_frames_and_keeps_latency_at_one_inference() -> None:
    cfg = Config.model_validate({"mqtt": {"enabled": False}, "debug": {"enabled": False}})
    engine = SlowEngine()
    daemon = Daemon(cfg, engine=engine, capture=Capture(CountingCamera()), notifier=Notifier(env={}))
    latencies = []
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if daemon.frames:
                latencies.append(daemon.latency_ms)
    finally:
        daemon.request_stop()
        thread.join(5)
    capture = daemon.capture
    assert daemon.frames >= 10
    assert capture.dropped > daemon.frames, "the camera's extra frames must be dropped, not queued"
    # capture -> done is one inference plus at most one camera frame of waiting, never a growing backlog
    assert max(latencies) < INFERENCE_S * 1000 + 100, latencies
    gaps = np.diff(engine.seen[1:]) % 256
    assert gaps.min() >= 2, "each inference took the newest frame, skipping the ones that arrived meanwhile"
    assert 5 < daemon.fps < 1 / INFERENCE_S + 1
