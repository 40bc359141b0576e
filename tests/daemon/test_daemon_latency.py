"""Inference slower than the camera: the daemon works on the newest frame, drops the rest, latency stays one
inference."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Optional

import numpy as np
from fallwatch.config.schema import Config
from fallwatch.daemon.app.sd_notify import Notifier
from fallwatch.daemon.app.service import Daemon
from fallwatch.daemon.capture.reader import Capture
from fallwatch.daemon.capture.sources import Source
from fallwatch.pose.types import PoseResult
from waiting import wait_until

PER_INFERENCE = 4  # camera frames that arrive while one inference runs (a 30 fps camera, ~8 fps of inference)
ROUNDS = 8


class GatedCamera(Source):
    """Each frame carries its number (1, 2, ...) in its pixels; a frame is read only when the test allows it, so
    how many frames arrive during one inference does not depend on how busy the machine is."""

    name = "gated-camera"
    bgr = False

    def __init__(self) -> None:
        self.allowed = threading.Semaphore(1)  # the first frame
        self.n = 0

    def open(self) -> None:
        pass

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        if not self.allowed.acquire(timeout=30):
            return None
        self.n += 1
        return np.full((64, 64, 3), self.n, np.uint8), time.monotonic()


class SlowEngine:
    """An inference during which PER_INFERENCE newer frames reach the capture."""

    backend = "cpu"
    backend_reason = "test"

    def __init__(self, camera: GatedCamera) -> None:
        self.camera = camera
        self.capture: Optional[Capture] = None
        self.seen: list[int] = []
        self.newest_when_taken: list[int] = []  # frames the capture had delivered when this one was processed

    def make_tracker(self) -> SimpleNamespace:
        return SimpleNamespace(s=SimpleNamespace(ignore_zones=()))  # (its tracks are this stand-in's business)

    def process(self, frame_rgb: np.ndarray, t: float, tracker: object = None) -> PoseResult:
        assert self.capture is not None
        self.newest_when_taken.append(self.capture.delivered)
        self.seen.append(int(frame_rgb[0, 0, 0]))
        if len(self.seen) < ROUNDS:
            target = self.capture.delivered + PER_INFERENCE
            for _ in range(PER_INFERENCE):
                self.camera.allowed.release()
            assert wait_until(lambda: self.capture.delivered >= target, 30), "the camera did not deliver"
        return PoseResult(persons=[], backend="cpu", stage_ms={"total": 1.0})


def test_slow_inference_drops_old_frames_and_keeps_latency_at_one_inference() -> None:
    cfg = Config.model_validate({"mqtt": {"enabled": False}, "debug": {"enabled": False}})
    camera = GatedCamera()
    engine = SlowEngine(camera)
    capture = Capture(camera)
    engine.capture = capture
    daemon = Daemon(cfg, engine=engine, capture=capture, notifier=Notifier(env={}))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: daemon.stats().camera.frames >= ROUNDS, 60), f"{daemon.stats()} frames processed"
    finally:
        daemon.request_stop()
        for _ in range(PER_INFERENCE):
            camera.allowed.release()  # a read waiting for its turn ends now
        thread.join(10)
    seen = engine.seen[:ROUNDS]
    # Each inference took the newest frame, never one queued behind it: latency stays one inference.
    assert seen == [1 + PER_INFERENCE * i for i in range(ROUNDS)], seen
    assert seen == engine.newest_when_taken[:ROUNDS]
    # The frames that arrived meanwhile were dropped, and counted, not queued.
    assert capture.dropped >= (PER_INFERENCE - 1) * (ROUNDS - 1), capture.stats()
    assert daemon.stats().camera.frames >= ROUNDS and daemon.stats().camera.latency_ms > 0
