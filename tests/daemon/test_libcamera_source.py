"""The `libcamera` source (libcamera's own Python bindings) and the `picamera2` source's fall back to it.

The real libcamera (Debian's, with its virtual camera in a VM) is exercised by `make picamera-test`
(tests/pi/picamera2_test.sh). Here: the pixel format conversions on a real picture, and the request flow and
pacing against a stand-in for the slice of the `libcamera` module the source uses.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import pytest
from camera_reads import read_frames
from fallwatch.config.schema import CameraConfig
from fallwatch.daemon.capture import sources as srcmod
from fallwatch.daemon.capture.libcamera_source import BUFFER_COUNT, LibcameraSource, to_bgr
from fallwatch.daemon.capture.sources import SourceError, make_source


@pytest.fixture(scope="module")
def picture(images_dir: Path) -> np.ndarray:
    image = cv2.imread(str(images_dir / "person.jpg"))
    assert image is not None
    return cv2.resize(image, (160, 120))  # even sides, as YUV 4:2:0 needs


def nv12_of(bgr: np.ndarray, stride: int) -> np.ndarray:
    """NV12 bytes of ``bgr`` with rows padded to ``stride`` (as a camera buffer may be)."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    y, u, v = i420[: w * h], i420[w * h : w * h * 5 // 4], i420[w * h * 5 // 4 :]
    uv = np.stack([u, v], axis=1).reshape(h // 2, w)
    planar = np.concatenate([y.reshape(h, w), uv])
    padded = np.zeros((h * 3 // 2, stride), np.uint8)
    padded[:, :w] = planar
    return padded.reshape(-1)


def close_to(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < tolerance


def test_every_supported_format_becomes_the_same_bgr_picture(picture: np.ndarray) -> None:
    h, w = picture.shape[:2]
    # libcamera's "RGB888" is stored B, G, R: the very bytes OpenCV calls BGR
    assert np.array_equal(to_bgr(cv2, "RGB888", [picture.reshape(-1)], w, h, w * 3), picture)
    rgb = picture[:, :, ::-1].reshape(-1)
    assert np.array_equal(to_bgr(cv2, "BGR888", [rgb], w, h, w * 3), picture)
    bgra = cv2.cvtColor(picture, cv2.COLOR_BGR2BGRA).reshape(-1)
    assert np.array_equal(to_bgr(cv2, "XRGB8888", [bgra], w, h, w * 4), picture)
    # YUV 4:2:0 loses colour detail: close, not equal; rows padded to a 64-byte stride are cut off
    nv12 = nv12_of(picture, stride=192)
    assert close_to(to_bgr(cv2, "NV12", [nv12], w, h, 192), picture, 4.0)
    y, uv = nv12[: 192 * h], nv12[192 * h :]
    assert close_to(to_bgr(cv2, "NV12", [y, uv], w, h, 192), picture, 4.0), "planes given apart"
    i420 = cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    assert close_to(to_bgr(cv2, "YUV420", [i420], w, h, w), picture, 4.0)
    # a wrong conversion would not be close: NV12 read as NV21 swaps the chroma
    assert not close_to(to_bgr(cv2, "NV21", [nv12], w, h, 192), picture, 4.0)
    with pytest.raises(ValueError, match="pixel format SGRBG10 is not supported"):
        to_bgr(cv2, "SGRBG10", [nv12], w, h, 192)


# -- a stand-in for the `libcamera` module --------------------------------------------------------------------


class FakeCamera:
    """Completes each queued request with a grey NV12 frame whose brightness is its number: at once (as
    libcamera's virtual camera does) or, with ``period``, one per period in a thread (as a sensor does)."""

    def __init__(self, lc: Any, period: Optional[float]):
        self.lc, self.period = lc, period
        self.id = "fake0"
        self.controls = {lc.ControlId("FrameDurationLimits"): None}
        self.started_with: Optional[dict] = None
        self.queued: list[Any] = []
        self.sequence = 0
        self.acquired = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def acquire(self) -> None:
        assert not self.acquired
        self.acquired = True

    def release(self) -> None:
        self.acquired = False

    def generate_configuration(self, roles: list) -> Any:
        return self.lc.CameraConfiguration()

    def configure(self, config: Any) -> None:
        self.config = config.at(0)

    def create_request(self, cookie: int) -> Any:
        return self.lc.Request(cookie)

    def start(self, controls: dict) -> None:
        self.started_with = {str(k): v for k, v in controls.items()}
        if self.period is not None:
            self._thread = threading.Thread(target=self._sensor, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def queue_request(self, request: Any) -> None:
        assert request.status != "queued", "a request queued twice"
        request.status = "queued"
        with self._lock:
            self.queued.append(request)
        if self.period is None:
            self._complete()

    def _sensor(self) -> None:
        while not self._stop.wait(self.period):
            self._complete()

    def _complete(self) -> None:
        with self._lock:
            if not self.queued:
                return  # no buffer: the sensor's frame is lost
            request = self.queued.pop(0)
            self.sequence += 1
        (buffer,) = request.buffers.values()
        luma = buffer.length * 2 // 3
        os.pwrite(buffer.fd, bytes([self.sequence % 200 + 30]) * luma + bytes([128]) * (buffer.length - luma), 0)
        # (libcamera 0.4's virtual camera sets only the request's SensorTimestamp, not the buffer's)
        request.metadata = {self.lc.ControlId("SensorTimestamp"): time.monotonic_ns()}
        request.status = self.lc.Request.Status.Complete
        self.lc.manager.ready(request)


def fake_libcamera(period: Optional[float] = None) -> types.ModuleType:
    lc = types.ModuleType("libcamera")

    class ControlId:
        def __init__(self, name: str):
            self.name = name

        def __str__(self) -> str:
            return self.name

    class Size:
        def __init__(self, width: int, height: int):
            self.width, self.height = width, height

    class PixelFormat:
        def __init__(self, name: str):
            self.name = name

        def __str__(self) -> str:
            return self.name

    class StreamConfiguration:
        def __init__(self) -> None:
            self.stream = object()
            self.size = Size(0, 0)
            self.pixel_format = PixelFormat("NV12")
            self.buffer_count = 0
            self.stride = 0

    class CameraConfiguration:
        class Status:
            Valid, Adjusted, Invalid = "valid", "adjusted", "invalid"

        def __init__(self) -> None:
            self.stream_config = StreamConfiguration()

        def at(self, i: int) -> StreamConfiguration:
            return self.stream_config

        def validate(self) -> str:
            self.stream_config.pixel_format = PixelFormat("NV12")  # all the virtual camera gives
            self.stream_config.stride = self.stream_config.size.width
            return self.Status.Adjusted

    class Plane:
        def __init__(self, fd: int, offset: int, length: int):
            self.fd, self.offset, self.length = fd, offset, length

    class FrameBuffer:
        def __init__(self, size: int):
            self.fd = os.memfd_create("fake-frame")
            os.ftruncate(self.fd, size)
            self.length = size
            self.planes = [Plane(self.fd, 0, size)]
            self.metadata = types.SimpleNamespace(timestamp=123)  # not set by the virtual camera: not used

    class FrameBufferAllocator:
        def __init__(self, cam: FakeCamera):
            self.cam = cam

        def allocate(self, stream: object) -> int:
            c = self.cam.config
            self.list = [FrameBuffer(c.size.width * c.size.height * 3 // 2) for _ in range(c.buffer_count)]
            return len(self.list)

        def buffers(self, stream: object) -> list:
            return self.list

    class Request:
        class Status:
            Pending, Complete, Cancelled = "pending", "complete", "cancelled"

        def __init__(self, cookie: int):
            self.cookie = cookie
            self.buffers: dict = {}
            self.metadata: dict = {}
            self.status = self.Status.Pending

        def add_buffer(self, stream: object, buffer: FrameBuffer) -> None:
            self.buffers[stream] = buffer

        def reuse(self) -> None:
            self.status = self.Status.Pending
            self.metadata = {}

    class CameraManager:
        def __init__(self, cam: FakeCamera):
            self.cameras = [cam]
            self.event_fd = os.eventfd(0, os.EFD_NONBLOCK)
            self._ready: list = []
            self._lock = threading.Lock()

        def ready(self, request: Request) -> None:
            with self._lock:
                self._ready.append(request)
            os.eventfd_write(self.event_fd, 1)

        def get_ready_requests(self) -> list:
            try:
                os.eventfd_read(self.event_fd)
            except BlockingIOError:
                pass
            with self._lock:
                ready, self._ready = self._ready, []
            return ready

    for cls in (ControlId, Size, PixelFormat, CameraConfiguration, FrameBufferAllocator, Request):
        setattr(lc, cls.__name__, cls)
    lc.StreamRole = types.SimpleNamespace(VideoRecording="video")  # type: ignore[attr-defined]
    lc.camera = FakeCamera(lc, period)  # type: ignore[attr-defined]
    lc.manager = CameraManager(lc.camera)  # type: ignore[attr-defined]
    lc.CameraManager = types.SimpleNamespace(singleton=lambda: lc.manager)  # type: ignore[attr-defined]
    return lc


def test_a_camera_that_ignores_its_frame_rate_is_asked_for_one_frame_per_period(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lc = fake_libcamera(period=None)  # completes each request as soon as it is queued
    monkeypatch.setitem(sys.modules, "libcamera", lc)
    caplog.set_level(logging.INFO, logger="fallwatch.daemon.capture.camera_timing")
    fps = 25.0
    source = make_source(CameraConfig(source="libcamera", width=96, height=64, fps=fps, min_fps=fps))
    assert isinstance(source, LibcameraSource)
    source.open()
    try:
        frames = read_frames(source, 12)
    finally:
        source.close()
    assert lc.camera.started_with == {"FrameDurationLimits": (40000, 40000)}, "only the controls it advertises"
    assert source.paced and "libcamera camera fake0 delivers frames as fast as they are asked for" in caplog.text
    image, _ = frames[-1]
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    paced = frames[4:]  # the first reads find the requests queued at start completed already
    stamps = [t for _, t in paced]
    gaps = np.diff(stamps)
    # on a schedule of one frame per period: a late frame makes the next gap shorter, the rate stays (a loaded
    # machine delays single frames, so the bounds are loose; unpaced, the gaps would be well under 1 ms)
    assert 0.85 / fps < gaps.mean() < 2.0 / fps, f"not one frame per period: {gaps}"
    assert gaps.min() > 0.25 / fps, f"frames far closer than a period: {gaps}"
    # one frame made per frame read (unpaced, each read would queue the four buffers again: four frames made)
    assert lc.camera.sequence <= len(frames) + BUFFER_COUNT, f"{lc.camera.sequence} frames made for {len(frames)}"
    brightness = [int(image[0, 0, 1]) for image, _ in paced]
    assert bool(np.all(np.diff(brightness) > 0)), f"each frame a newer one: {brightness}"
    assert np.ptp(image.astype(int), axis=2).max() <= 2, "NV12 grey became BGR grey"
    assert not lc.camera.acquired, "closed: the camera is released"


def test_a_sensor_paced_camera_is_read_as_it_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    lc = fake_libcamera(period=0.02)
    monkeypatch.setitem(sys.modules, "libcamera", lc)
    source = LibcameraSource(64, 48, 50.0, {"FrameDurationLimits": (20000, 20000), "AnalogueGain": 2.0})
    source.open()
    try:
        frames = read_frames(source, 15)
    finally:
        source.close()
    assert not source.paced
    assert lc.camera.started_with == {"FrameDurationLimits": (20000, 20000)}
    stamps = [t for _, t in frames]
    assert bool(np.all(np.diff(stamps) > 0)), "time stamps from the camera, increasing"
    assert abs(stamps[-1] - time.monotonic()) < 1.0, "on the clock of time.monotonic()"


def test_picamera2_falls_back_to_libcamera_when_it_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 raises ImportError
    monkeypatch.setitem(sys.modules, "libcamera", fake_libcamera())
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.sources")
    source = make_source(CameraConfig(source="picamera2"))
    assert isinstance(source, LibcameraSource)
    assert source.describe() == "libcamera camera (not open)", "the daemon describes sources before they open"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "picamera2 cannot be imported" in lines[0] and "libcamera's own Python bindings instead" in lines[0]


def test_neither_picamera2_nor_libcamera_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    monkeypatch.setitem(sys.modules, "libcamera", None)
    with pytest.raises(SourceError, match="python3-picamera2") as info:
        make_source(CameraConfig(source="picamera2"))
    assert "\n" not in str(info.value)
    with pytest.raises(SourceError, match="camera.source libcamera: .*python3-libcamera"):
        make_source(CameraConfig(source="libcamera"))
    assert srcmod.picamera2_available() is False
