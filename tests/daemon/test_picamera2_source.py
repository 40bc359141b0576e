"""The `picamera2` source: frames stamped with the camera's SensorTimestamp (monotonic where picamera2 gives none)
and paced at camera.fps as the libcamera source's, against a stand-in for the slice of picamera2 it uses.

The real picamera2 needs a Raspberry Pi camera stack; `make picamera-test` runs PyPI's against Debian's libcamera.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from typing import Any, Optional

import numpy as np
import pytest
from camera_reads import read_frames
from fallwatch.config.schema import CameraConfig
from fallwatch.daemon.capture.sources import PiCamera2Source, make_source


class FakeRequest:
    def __init__(self, cam: "FakePicamera2", image: np.ndarray, metadata: dict):
        self.cam, self.image, self.metadata = cam, image, metadata

    def make_array(self, name: str) -> np.ndarray:
        assert name == "main" and not self.cam.stopped
        return self.image.copy()

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def release(self) -> None:
        self.cam.outstanding -= 1


class FakePicamera2:
    """Gives each capture_request a frame numbered by its brightness: at once (as a camera that ignores its frame
    rate does) or, with ``period``, on the next tick of a sensor clock. ``stamped``: whether the metadata carries
    SensorTimestamp (3 ms before the frame is done, as an exposure ends before its read-out)."""

    period: Optional[float] = None
    stamped = True
    instances: list["FakePicamera2"] = []

    def __init__(self) -> None:
        self.camera_properties = {"Model": "imx708"}
        self.configured: Optional[dict] = None
        self.started = self.stopped = self.closed = False
        self.sequence = 0
        self.outstanding = 0  # requests handed out and not released
        self.stamps: list[float] = []
        self._lock = threading.Lock()
        self._epoch = time.monotonic()
        type(self).instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return [{"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]

    def create_video_configuration(self, main: dict, controls: dict, buffer_count: int) -> dict:
        return {"main": main, "controls": controls, "buffer_count": buffer_count}

    def configure(self, config: dict) -> None:
        self.configured = config

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True

    def capture_request(self) -> FakeRequest:
        captured = time.monotonic()
        if self.period is not None:  # the next frame the sensor finishes, stamped with the sensor's clock
            captured = self._epoch + ((captured - self._epoch) // self.period + 1) * self.period
            time.sleep(max(0.0, captured - time.monotonic()))
        with self._lock:
            self.sequence += 1
            self.outstanding += 1
        w, h = self.configured["main"]["size"] if self.configured else (0, 0)
        image = np.full((h, w, 3), self.sequence % 200 + 30, np.uint8)
        metadata: dict[str, Any] = {"ExposureTime": 10000}
        if self.stamped:
            stamp_ns = int(captured * 1e9) - 3_000_000
            metadata["SensorTimestamp"] = stamp_ns
            self.stamps.append(stamp_ns / 1e9)
        return FakeRequest(self, image, metadata)


@pytest.fixture
def picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    fake = type("Picamera2", (FakePicamera2,), {"instances": []})
    module.Picamera2 = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return fake


def test_frames_carry_the_cameras_sensor_timestamp(picamera2: type[FakePicamera2]) -> None:
    picamera2.period = 0.02
    source = make_source(CameraConfig(source="picamera2", width=96, height=64, fps=50.0, min_fps=50.0))
    assert isinstance(source, PiCamera2Source)
    source.open()
    try:
        frames = read_frames(source, 8)
    finally:
        source.close()
    (cam,) = picamera2.instances
    assert [t for _, t in frames] == cam.stamps, "the time stamps are the camera's, not the time of the read"
    assert cam.configured and cam.configured["main"] == {"size": (96, 64), "format": "RGB888"}
    assert frames[0][0].shape == (64, 96, 3)
    assert cam.outstanding == 0, "every request went back to the camera"
    assert cam.stopped and cam.closed
    assert not source.pacer.paced, "a camera that keeps its own frame rate is read as it comes"


def test_without_a_sensor_timestamp_a_frame_is_stamped_when_it_is_read(picamera2: type[FakePicamera2]) -> None:
    picamera2.period, picamera2.stamped = 0.02, False
    source = PiCamera2Source(64, 48, 50.0)
    source.open()
    try:
        before = time.monotonic()
        got = source.read()
        after = time.monotonic()
    finally:
        source.close()
    assert got is not None and before <= got[1] <= after


def test_a_camera_that_ignores_its_frame_rate_is_read_once_per_period(
    picamera2: type[FakePicamera2], caplog: pytest.LogCaptureFixture
) -> None:
    picamera2.period = None  # a frame as soon as one is asked for, as libcamera's virtual camera
    caplog.set_level(logging.INFO, logger="fallwatch.daemon.capture.camera_timing")
    fps = 10.0  # a long period: a loaded machine's scheduling delays are small beside it
    source = PiCamera2Source(64, 48, fps)
    source.open()
    try:
        frames = read_frames(source, 12)
    finally:
        source.close()
    assert source.pacer.paced
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("picamera2 camera imx708 delivers frames as fast as they are"), lines
    gaps = np.diff([t for _, t in frames[2:]])
    # one frame per period (the median: a loaded machine delays single reads; unpaced, the gaps are microseconds)
    assert 0.85 / fps < float(np.median(gaps)) < 1.5 / fps, f"not one frame per period: {gaps}"
    assert gaps.min() > 0.25 / fps, f"frames far closer than a period: {gaps}"
    brightness = [int(image[0, 0, 0]) for image, _ in frames]
    assert brightness == sorted(brightness) and len(set(brightness)) == len(frames), "each frame a newer one"
