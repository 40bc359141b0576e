"""Capture: real video decoding and pacing, the newest-frame slot, reopen with backoff, bad frames skipped."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest
from fallwatch.config.schema import CameraConfig
from fallwatch.daemon.capture import sources as srcmod
from fallwatch.daemon.capture.reader import Capture, is_frame, open_capture, rgb_of, transform
from fallwatch.daemon.capture.sources import ImageFolderSource, OpenCVCameraSource, Source, SourceError, make_source
from waiting import wait_until

CLIP_30FPS = "Subject 1/Fall/15.mp4"  # 640x480, 30 fps, 178 frames
CLIP_15FPS = "Subject 2/ADL/23.mp4"  # 640x480, 14.985 fps


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> Path:
    return data_dir / "gmdcsa24-dev"


def file_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(capture: Capture, seconds: float, per_frame_s: float = 0.0) -> list:
    frames = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not capture.finished:
        frame = capture.get(0.1)
        if frame is not None:
            frames.append(frame)
            if per_frame_s:
                time.sleep(per_frame_s)
    return frames


@pytest.mark.parametrize("clip", [CLIP_30FPS, CLIP_15FPS])
def test_realtime_file_runs_at_its_own_fps(clips: Path, clip: str) -> None:
    path = clips / clip
    fps = file_fps(path)
    started = time.monotonic()
    capture = open_capture(CameraConfig(source=str(path), realtime=True))
    frames: list = []
    try:
        # until one second of media time has played (a busy machine may take longer: that is no failure)
        assert wait_until(lambda: frames.append(capture.get(0.1)) or (frames[-1] and frames[-1].t >= 1.0), 30)
    finally:
        capture.stop()
    frames = [f for f in frames if f is not None]
    # Paced: no frame is handed out before its media time has passed on the wall clock (played as fast as
    # possible, the frame at 1 s would come after some 30 ms of decoding).
    early = [(f.frame_no, round(f.t, 3), round(f.captured - started, 3)) for f in frames if f.captured - started < f.t]
    assert not early, f"frames ahead of their media time (frame, t, wall): {early}"
    # Media time starts at 0 and advances at the file's rate.
    assert frames[0].t == pytest.approx(0.0, abs=1 / fps)
    assert frames[-1].t == pytest.approx(frames[-1].frame_no / fps, abs=1 / fps)
    assert capture.source.fps == pytest.approx(fps)


def test_file_as_fast_as_possible_delivers_every_frame_in_order(clips: Path) -> None:
    path = clips / CLIP_30FPS
    started = time.monotonic()
    capture = open_capture(CameraConfig(source=str(path), realtime=False))
    try:
        frames = drain(capture, 30.0, per_frame_s=0.001)
    finally:
        capture.stop()
    assert capture.state == "eof" and capture.finished
    n = len(frames)
    assert n == 178 and capture.dropped == 0 and capture.corrupt == 0
    assert [f.frame_no for f in frames] == list(range(n))
    fps = capture.source.fps
    assert frames[-1].t == pytest.approx((n - 1) / fps, abs=0.5 / fps)  # container time stamps
    # realtime: false is not paced: frames come ahead of their media time (all of them but the first few, unless
    # the machine cannot decode at the clip's rate; one is enough)
    assert any(f.captured - started < f.t for f in frames), "realtime: false must not be paced"
    assert frames[0].image.shape == (480, 640, 3) and frames[0].image.dtype == np.uint8


def test_frames_are_rgb(clips: Path) -> None:
    path = clips / CLIP_30FPS
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    capture = open_capture(CameraConfig(source=str(path), realtime=False))
    try:
        frame = capture.get(5)
    finally:
        capture.stop()
    assert frame is not None
    assert np.array_equal(frame.image, bgr[:, :, ::-1])


def test_loop_restarts_with_increasing_time(clips: Path) -> None:
    capture = open_capture(CameraConfig(source=str(clips / CLIP_30FPS), realtime=False, loop=True))
    try:
        frames = [f for f in (capture.get(1) for _ in range(400)) if f is not None]
    finally:
        capture.stop()
    assert len(frames) == 400 and capture.state == "stopped"
    ts = [f.t for f in frames]
    assert all(b > a for a, b in itertools.pairwise(ts)), "media time must keep increasing across loops"
    assert [f.frame_no for f in frames] == list(range(400))


def test_slow_consumer_gets_newest_frame_and_drops_are_counted(clips: Path) -> None:
    capture = open_capture(CameraConfig(source=str(clips / CLIP_30FPS), realtime=True))
    frames, newest = [], []
    try:
        frames.append(capture.get(10))
        for _ in range(6):  # "inference" during which 3 or more camera frames arrive
            delivered = capture.delivered
            assert wait_until(lambda delivered=delivered: capture.delivered >= delivered + 3, 30), capture.stats()
            newest.append(capture.delivered - 1)  # frame numbers count the frames read, from 0
            frames.append(capture.get(10))
    finally:
        capture.stop()
    capture.get(0)  # whatever is left in the slot: then every frame read was taken or dropped
    assert None not in frames
    assert capture.dropped >= 2 * 6 and capture.delivered == capture.taken + capture.dropped
    gaps = [b.frame_no - a.frame_no for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 3, f"old frames were queued instead of dropped: {gaps}"
    # The frame handed out is the newest read when it was asked for (or newer), never a backlog.
    assert all(f.frame_no >= n for f, n in zip(frames[1:], newest, strict=True)), ([f.frame_no for f in frames], newest)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])


def test_image_folder_skips_and_counts_corrupt_images(tmp_path: Path, images_dir: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(["person.jpg", "fall_img_1.png", "squat.bmp"]):
        (folder / f"{i * 2:02d}_{name}").symlink_to(images_dir / name)
    (folder / "01_broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (folder / "03_empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image")
    capture = open_capture(CameraConfig(source=str(folder), realtime=False, fps=10))
    try:
        frames = drain(capture, 10)
    finally:
        capture.stop()
    assert capture.state == "eof"
    assert len(frames) == 3 and capture.corrupt == 2
    assert [f.frame_no for f in frames] == [0, 2, 4]
    assert [f.t for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    squat = cv2.imread(str(images_dir / "squat.bmp"))[:, :, ::-1]
    assert np.array_equal(frames[-1].image, squat)


class ScriptedSource(Source):
    """A camera-like source returning the given frames (None = failed read), then repeating the last one."""

    name = "scripted"

    def __init__(self, frames: list, fail_open: int = 0):
        self.frames = list(frames)
        self.fail_open = fail_open
        self.opens = 0
        self.bgr = False

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.fail_open:
            raise OSError(f"device busy (open #{self.opens})")

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        time.sleep(0.005)
        item = self.frames.pop(0) if len(self.frames) > 1 else self.frames[0]
        return None if item is None else (item, time.monotonic())


class CountedImage(np.ndarray):
    """A frame that counts the slicing a conversion to RGB does."""

    conversions = 0

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, tuple):
            CountedImage.conversions += 1
        return np.asarray(self)[key]


def test_frames_dropped_unseen_are_never_converted() -> None:
    CountedImage.conversions = 0
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[:, :] = (1, 2, 3)
    source = ScriptedSource([bgr.view(CountedImage)])
    source.bgr = True
    capture = Capture(source, realtime=True).start()
    try:
        assert wait_until(lambda: capture.delivered >= 20, 10), capture.stats()
        frame = capture.get(2)
    finally:
        capture.stop()
    assert frame is not None and frame.image[0, 0].tolist() == [3, 2, 1]
    assert capture.dropped >= 18
    assert CountedImage.conversions == capture.taken == 1


def test_malformed_frames_are_skipped_and_counted() -> None:
    good = np.full((48, 64, 3), 7, np.uint8)
    bad = [
        np.zeros((48, 64, 3), np.float32),
        np.zeros((48, 64, 2), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        np.zeros((4, 4, 3), np.uint8),
        "not an array",
    ]
    source = ScriptedSource(bad + [good])
    capture = Capture(source, realtime=True).start()
    try:
        frame = capture.get(2)
    finally:
        capture.stop()
    assert frame is not None and np.array_equal(frame.image, good)
    assert capture.corrupt == len(bad)
    assert frame.frame_no >= len(bad)


def test_camera_that_fails_to_open_is_retried_with_capped_backoff(caplog: pytest.LogCaptureFixture) -> None:
    good = np.full((48, 64, 3), 9, np.uint8)
    source = ScriptedSource([good], fail_open=4)
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    capture = Capture(source, reopen_min_s=0.05, reopen_max_s=0.2).start()
    try:
        frame = capture.get(5)
    finally:
        capture.stop()
    assert frame is not None and source.opens == 5 and capture.reopens == 4
    delays = [
        float(r.getMessage().split("retrying in ")[1].split("s")[0])
        for r in caplog.records
        if "retrying in" in r.getMessage()
    ]
    assert delays == [0.05, 0.1, 0.2, 0.2], "backoff doubles up to reopen_max_s"


def test_camera_that_stops_delivering_is_reopened(caplog: pytest.LogCaptureFixture) -> None:
    good = np.full((48, 64, 3), 9, np.uint8)
    source = ScriptedSource([good, None, None, None, None, good])
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    capture = Capture(source, reopen_min_s=0.05, reopen_max_s=0.1).start()
    try:
        frames = drain(capture, 1.0)
    finally:
        capture.stop()
    assert len(frames) >= 2 and source.opens >= 2 and capture.reopens >= 1
    assert any("stopped delivering frames" in r.getMessage() for r in caplog.records)


def test_missing_v4l2_device_is_retried_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    source = make_source(CameraConfig(), "v4l2:/dev/video-fallwatch-missing")
    capture = Capture(source, reopen_min_s=0.1, reopen_max_s=0.4).start()
    try:
        assert capture.get(1.0) is None
        assert wait_until(lambda: capture.reopens >= 3, 30), capture.stats()
        assert capture.state == "reopening" and not capture.ended
    finally:
        capture.stop()
    assert capture.reopens >= 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("/dev/video-fallwatch-missing does not exist" in m and "retrying in" in m for m in messages)


def test_unreachable_rtsp_stream_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    url = f"rtsp://user:secret@127.0.0.1:{closed_port()}/stream"
    capture = Capture(make_source(CameraConfig(), url), reopen_min_s=0.1, reopen_max_s=0.2).start()
    try:
        assert wait_until(lambda: capture.reopens >= 2, 30), capture.stats()
        assert capture.state == "reopening"
    finally:
        capture.stop()
    assert capture.reopens >= 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "retrying in" in messages and "secret" not in messages, "passwords must not reach the log"


def test_transform_rotates_clockwise_after_flipping() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(transform(img, 0, "none"), img)
    assert np.array_equal(transform(img, 90, "none"), cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE))
    assert np.array_equal(transform(img, 180, "none"), cv2.rotate(img, cv2.ROTATE_180))
    assert np.array_equal(transform(img, 270, "none"), cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE))
    assert np.array_equal(transform(img, 0, "horizontal"), cv2.flip(img, 1))
    assert np.array_equal(transform(img, 0, "vertical"), cv2.flip(img, 0))
    assert np.array_equal(transform(img, 90, "both"), cv2.rotate(cv2.flip(img, -1), cv2.ROTATE_90_CLOCKWISE))


def test_rotation_applies_to_delivered_frames(clips: Path) -> None:
    capture = open_capture(CameraConfig(source=str(clips / CLIP_30FPS), realtime=False, rotate=90, flip="horizontal"))
    try:
        frame = capture.get(5)
    finally:
        capture.stop()
    assert frame is not None and frame.image.shape == (640, 480, 3) and frame.image.flags.c_contiguous


def test_rgb_of_converts_grey_and_drops_alpha() -> None:
    grey = np.full((20, 30), 5, np.uint8)
    assert is_frame(grey) and rgb_of(grey, bgr=True).shape == (20, 30, 3)
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    assert is_frame(bgra)
    rgb = rgb_of(bgra, bgr=True)
    assert rgb.shape == (20, 30, 3) and rgb[0, 0, 2] == 255 and rgb[0, 0, 0] == 0


def test_source_errors_are_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        make_source(CameraConfig(), str(tmp_path / "missing.mp4"))
    bogus = tmp_path / "clip.mp4"
    bogus.write_text("not a video")
    with pytest.raises(SourceError, match="cannot decode this file as video"):
        open_capture(CameraConfig(source=str(bogus)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_capture(CameraConfig(source=str(empty)))
    monkeypatch.setattr(srcmod, "picamera2_available", lambda: False)
    monkeypatch.setattr(srcmod, "v4l2_cameras", lambda: [])
    with pytest.raises(SourceError) as info:
        make_source(CameraConfig(source="auto"))
    assert str(info.value).startswith("no camera found") and "\n" not in str(info.value)


def test_auto_falls_back_to_v4l2_when_picamera2_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(srcmod, "picamera2_available", lambda: False)
    monkeypatch.setattr(srcmod, "v4l2_cameras", lambda: ["/dev/video3"])
    source = make_source(CameraConfig(source="auto"))
    assert isinstance(source, OpenCVCameraSource) and source.target == "/dev/video3"


def test_picamera2_absent_is_a_clear_error_not_a_crash() -> None:
    try:
        import picamera2  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(SourceError, match="python3-picamera2"):
        make_source(CameraConfig(source="picamera2"))
    assert srcmod.picamera2_available() is False


def test_auto_finds_no_camera_on_this_machine() -> None:
    if srcmod.v4l2_cameras() or srcmod.picamera2_available():
        pytest.skip("this machine has a camera")
    with pytest.raises(SourceError, match="no camera found"):
        make_source(CameraConfig(source="auto"))


def test_image_folder_source_is_a_folder(images_dir: Path) -> None:
    assert isinstance(make_source(CameraConfig(), str(images_dir)), ImageFolderSource)
    assert os.path.isdir(images_dir)


class FakeRequest:
    """One completed request: its image (``make_array``) and metadata, given back with ``release``."""

    def __init__(self, image: np.ndarray, metadata: dict) -> None:
        self.image, self.metadata, self.released = image, metadata, False

    def make_array(self, stream: str) -> np.ndarray:
        assert stream == "main" and not self.released
        return self.image.copy()

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    """The slice of picamera2's API fallwatch uses, to exercise PiCamera2Source's code path without a Pi."""

    cameras = [{"Model": "imx708", "Num": 0}]
    instances: list["FakePicamera2"] = []

    @classmethod
    def global_camera_info(cls) -> list:
        return cls.cameras

    def __init__(self) -> None:
        self.config = None
        self.started = self.closed = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, controls: dict, buffer_count: int) -> dict:
        return {"main": main, "controls": controls, "buffer_count": buffer_count}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_request(self) -> "FakeRequest":
        assert self.started
        w, h = self.config["main"]["size"]
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = 200  # "RGB888" is B, G, R in memory: blue
        time.sleep(0.01)
        return FakeRequest(img, {"SensorTimestamp": time.monotonic_ns()})

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def test_picamera2_code_path_with_a_stand_in_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances.clear()
    cam = CameraConfig(source="auto", width=320, height=240, fps=12, rotate=180)
    source = make_source(cam)
    assert isinstance(source, srcmod.PiCamera2Source), "auto prefers the Pi camera when picamera2 sees one"
    capture = open_capture(cam)
    try:
        frame = capture.get(5)
    finally:
        capture.stop()
    picam = FakePicamera2.instances[-1]
    # 12 fps, and in the dark the frames may stretch to 1/10 s (min_fps' default), no longer
    assert picam.config == {
        "main": {"size": (320, 240), "format": "RGB888"},
        "controls": {"FrameDurationLimits": (83333, 100000)},
        "buffer_count": 4,
    }
    assert frame is not None and frame.image.shape == (240, 320, 3)
    assert frame.image[0, 0].tolist() == [0, 0, 200], "BGR from picamera2 becomes RGB"
    assert picam.closed and not picam.started


def test_picamera2_gets_the_night_exposure_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances.clear()
    cam = CameraConfig(
        source="picamera2", fps=15, min_fps=8, exposure_ms=60, analogue_gain=6, noise_reduction="high_quality"
    )
    source = make_source(cam)
    source.open()
    try:
        controls = FakePicamera2.instances[-1].config["controls"]
    finally:
        source.close()
    assert controls == {
        "FrameDurationLimits": (66667, 125000),
        "ExposureTime": 60000,
        "AnalogueGain": 6.0,
        "NoiseReductionMode": 2,
    }
    # min_fps at or above fps keeps the frame rate fixed
    assert srcmod.picamera2_controls(CameraConfig(fps=15, min_fps=30)) == {"FrameDurationLimits": (66667, 66667)}


def test_night_camera_settings_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exposure_ms: 200 ms does not fit in a frame at 10 fps"):
        CameraConfig(fps=15, min_fps=10, exposure_ms=200)
    with pytest.raises(ValidationError, match="analogue_gain"):
        CameraConfig(analogue_gain=0.5)
    with pytest.raises(ValidationError, match="noise_reduction"):
        CameraConfig(noise_reduction="max")


def test_picamera2_without_a_camera_is_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys
    import types

    module = types.ModuleType("picamera2")
    module.Picamera2 = type("NoCam", (FakePicamera2,), {"cameras": []})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(srcmod, "v4l2_cameras", lambda: [])
    with pytest.raises(SourceError, match="no camera found"):
        make_source(CameraConfig(source="auto"))
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    capture = Capture(make_source(CameraConfig(source="picamera2")), reopen_min_s=0.05, reopen_max_s=0.1).start()
    try:
        assert wait_until(lambda: capture.reopens >= 2, 30), capture.stats()
        assert capture.state == "reopening"
    finally:
        capture.stop()
    assert any("picamera2 sees no camera attached" in r.getMessage() for r in caplog.records)


def test_network_stream_that_goes_away_is_reopened_when_it_returns(
    tmp_path: Path, clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real HTTP stream through OpenCV's FFmpeg: frames, then the server vanishes, then it is back."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "cam.mp4").symlink_to(clips / CLIP_15FPS)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]

    def serve(port: int = 0) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    server = serve()
    port = server.server_address[1]
    caplog.set_level(logging.INFO, logger="fallwatch.daemon.capture.reader")
    capture = Capture(
        make_source(CameraConfig(), f"http://127.0.0.1:{port}/cam.mp4"), reopen_min_s=0.1, reopen_max_s=0.3
    ).start()
    try:
        # (Served as a file, the stream ends every ~170 frames and is reopened: a camera that keeps dropping out.)
        first = drain(capture, 1.5)
        assert len(first) > 10
        # t is its capture time, not the file's media time (seconds from 0): read a moment before the frame is
        # converted and stamped `captured`, so on a loaded machine the two differ by a scheduling delay only
        assert abs(first[-1].t - first[-1].captured) < 0.25, "a camera's t is its capture time"
        server.shutdown()
        server.server_close()

        def open_failures() -> int:
            return sum("unavailable" in r.getMessage() for r in caplog.records)

        deadline = time.monotonic() + 15
        while open_failures() < 2 and time.monotonic() < deadline:
            capture.get(0.1)
        assert open_failures() >= 2 and capture.state == "reopening"
        capture.get(0.05)
        assert capture.get(0.5) is None, "no frames while the server is gone"
        server = serve(port)
        frames = drain(capture, 3.0)
        assert len(frames) > 10, "frames flow again once the stream is back"
    finally:
        capture.stop()
        server.shutdown()
        server.server_close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying in" in m for m in messages)


def test_v4l2_discovery_skips_pi_codecs_isps_and_metadata_nodes(tmp_path: Path) -> None:
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    nodes = {  # a Pi 4 with a USB webcam: its capture node, its metadata node, and the VideoCore's helpers
        "video10": ("bcm2835-codec-decode", 0),
        "video11": ("bcm2835-codec-encode", 0),
        "video13": ("bcm2835-isp", 0),
        "video19": ("rpivid", 0),
        "video2": ("HD Pro Webcam C920", 0),
        "video3": ("HD Pro Webcam C920", 1),
    }
    dev.mkdir()
    for node, (name, index) in nodes.items():
        (dev / node).touch()
        (sysfs / node).mkdir(parents=True)
        (sysfs / node / "name").write_text(name + "\n")
        (sysfs / node / "index").write_text(f"{index}\n")
    assert srcmod.v4l2_cameras(str(dev), str(sysfs)) == [str(dev / "video2")]
    (dev / "video0").touch()  # no sysfs entry (e.g. v4l2loopback in a container): taken, and first
    assert srcmod.v4l2_cameras(str(dev), str(sysfs)) == [str(dev / "video0"), str(dev / "video2")]


def test_image_folder_plays_numbered_frames_in_numeric_order(tmp_path: Path, images_dir: Path) -> None:
    # Frames exported as frame_1, frame_2, ..., frame_10 (no zero padding) must play in that order, not
    # frame_1, frame_10, frame_2 as a plain string sort has it (a fall would play scrambled).
    folder = tmp_path / "frames"
    folder.mkdir()
    names = ["person.jpg", "fall_img_1.png", "squat.bmp", "person-couch.jpg"]
    numbers = [1, 2, 10, 11]
    for n, name in zip(numbers, names, strict=True):
        (folder / f"frame_{n}{Path(name).suffix}").symlink_to(images_dir / name)
    capture = open_capture(CameraConfig(source=str(folder), realtime=False, fps=10))
    try:
        frames = drain(capture, 10)
    finally:
        capture.stop()
    assert len(frames) == len(names)
    for frame, name in zip(frames, names, strict=True):
        assert np.array_equal(frame.image, cv2.imread(str(images_dir / name))[:, :, ::-1]), name


def test_camera_delivering_only_malformed_frames_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    # A camera stuck in a wrong format delivers frames that are all skipped. That used to be logged at debug
    # only: the daemon idled silently. It is a warning (once per bad run, not per frame) and the capture's error.
    bad = np.zeros((48, 64, 2), np.uint8)
    good = np.full((48, 64, 3), 5, np.uint8)
    source = ScriptedSource([bad] * 30 + [good] + [bad] * 30)
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    capture = Capture(source, realtime=True).start()
    try:
        assert wait_until(lambda: capture.corrupt >= 10, 30), capture.stats()
        assert capture.error is not None and "malformed" in capture.error and "(48, 64, 2)" in capture.error
        frames = drain(capture, 1.5)
    finally:
        capture.stop()
    assert frames and np.array_equal(frames[0].image, good)
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 2, warnings  # the first bad run, and the one after the good frame
    assert "scripted" in warnings[0] and "(48, 64, 2)" in warnings[0]


def test_looping_file_that_disappears_fails_with_one_clear_line(
    tmp_path: Path, clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Rewinding reopens the file by name; when it has gone (replaced, unmounted) that used to escape as a
    # "capture thread failed" traceback. It is the source's one-line error and a failed capture.
    clip = tmp_path / "clip.mp4"
    clip.write_bytes((clips / CLIP_15FPS).read_bytes())
    caplog.set_level(logging.INFO, logger="fallwatch.daemon.capture.reader")
    capture = open_capture(CameraConfig(source=str(clip), realtime=False, loop=True))
    try:
        assert capture.get(5) is not None
        clip.unlink()
        frames = drain(capture, 30)
    finally:
        capture.stop()
    assert capture.state == "failed" and capture.finished
    assert capture.error == f"camera.source {clip}: no such file"
    assert 0 < len(frames) < 400
    assert not any(r.exc_info for r in caplog.records), "no traceback"
    assert "capture thread failed" not in caplog.text


def test_looping_folder_without_one_decodable_image_fails_instead_of_spinning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With loop: true, a folder whose images all fail to decode was replayed forever at full speed, a warning
    # per image per pass: a busy CPU and a flooded journal. A pass without a single frame ends the source.
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    caplog.set_level(logging.WARNING, logger="fallwatch.daemon.capture.reader")
    capture = open_capture(CameraConfig(source=str(folder), realtime=True, loop=True, fps=10))
    try:
        frames = drain(capture, 5)
    finally:
        capture.stop()
    assert frames == []
    assert capture.state == "failed" and capture.finished
    assert capture.error == f"camera.source {folder}: no image in the folder could be decoded"
    assert capture.corrupt == 3 and len(caplog.records) <= 4


def test_realtime_file_with_a_time_stamp_jump_does_not_stall(tmp_path: Path) -> None:
    # Recordings joined together (or a camera's clock reset) carry a jump in their time stamps. Pacing slept
    # until the jumped time came (here 100 s), the daemon silently frozen; a jump now restarts the pacing.
    import shutil
    import subprocess

    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        pytest.skip("ffmpeg is not installed")
    clip = tmp_path / "gap.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
            "-frames:v",
            "20",
            "-vf",
            "setpts='PTS+if(gte(N,10),100/TB,0)'",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
        timeout=60,
    )
    t0 = time.monotonic()
    capture = open_capture(CameraConfig(source=str(clip), realtime=True))
    try:
        frames = drain(capture, 30)  # a stall would wait for the jumped time (100 s)
    finally:
        capture.stop()
    # every frame read came out (taken, or dropped for a newer one when this thread was slow: realtime)
    assert capture.state == "eof" and len(frames) + capture.dropped == 20, (len(frames), capture.stats())
    before = [f for f in frames if f.frame_no < 10]
    after = [f for f in frames if f.frame_no >= 10]
    assert before and after, [f.frame_no for f in frames]
    a, b = before[-1], after[0]
    assert b.t - a.t == pytest.approx(100 + 0.1 * (b.frame_no - a.frame_no), abs=0.05), (
        "media time keeps the file's jump"
    )
    # still paced at the file's rate before the jump: no frame before its media time (0.1 s a frame)
    assert all(f.captured - t0 >= f.t for f in before), [(f.t, f.captured - t0) for f in before]


def _huge_png(path: Path, side: int) -> None:
    """A valid side x side black PNG written row by row (its decoded size would be side * side * 3 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + bytes(side * 3)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@pytest.mark.slow
def test_images_above_the_size_limit_are_refused_from_their_header_or_downscaled(
    tmp_path: Path, images_dir: Path
) -> None:
    # Side door 6: one 12000x12000 PNG in an image folder took the daemon to 990 MB. Now its header is read first
    # and it is skipped with one warning; a too-large JPEG is decoded at a reduced scale instead. The folder is
    # read in a child process, so its peak memory can be measured.
    import resource
    import subprocess
    import sys

    folder = tmp_path / "frames"
    folder.mkdir()
    _huge_png(folder / "00_huge.png", 12000)
    big_jpeg = np.zeros((4800, 6400, 3), np.uint8)
    big_jpeg[:, :3200] = 255
    cv2.imwrite(str(folder / "01_big.jpg"), big_jpeg)
    del big_jpeg
    (folder / "02_person.jpg").symlink_to(images_dir / "person.jpg")
    script = (
        "import sys, logging\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format='%(levelname)s %(message)s')\n"
        "from fallwatch.daemon.capture.sources import ImageFolderSource\n"
        "src = ImageFolderSource(sys.argv[1], 10); src.open()\n"
        "for _ in range(3):\n"
        "    got = src.read()\n"
        "    print(None if got is None else got[0].shape)\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=60)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert result.returncode == 0, result.stderr
    person = cv2.imread(str(images_dir / "person.jpg")).shape
    assert result.stdout.split("\n")[:3] == ["None", "(2400, 3200, 3)", str(person)]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING {folder / '00_huge.png'}: 12000x12000 is larger than the limit of 16.8 megapixels; "
        f"skipped (scale it down first)"
    ]
    # decoding the PNG alone would take 432 MB; the 6400x4800 JPEG 92 MB at full size
    if before < 300 * 1024:  # an earlier child may already have set the high-water mark
        assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"


def _damaged_copy(clips: Path, tmp_path: Path, start: float, end: float) -> Path:
    """The 30 fps clip with the share [start, end) of its media data (mdat) overwritten with zeros."""
    data = bytearray((clips / CLIP_30FPS).read_bytes())
    mdat = data.find(b"mdat") + 4  # the clip's layout: ftyp, uuid, mdat, moov (checked below)
    moov = data.find(b"moov") - 4
    assert 0 < mdat < moov
    a, b = mdat + int((moov - mdat) * start), mdat + int((moov - mdat) * end)
    data[a:b] = bytes(b - a)
    path = tmp_path / f"damaged-{start}-{end}.mp4"
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_video_says_so_and_one_with_no_frame_fails(
    clips: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Side door 7: damage mid-file ended the source as a clean EOF (91 of 178 frames, no word), and a file with no
    # decodable frame ended as "eof" after 0 frames (the daemon exited 0). Now the damage is skipped and said,
    # and a file that gives no frame fails.
    path = _damaged_copy(clips, tmp_path, 0.5, 0.75)
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.capture.sources"):
        capture = open_capture(CameraConfig(source=str(path), realtime=False))
        try:
            frames = drain(capture, 60)
        finally:
            capture.stop()
    assert capture.state == "eof"
    assert 91 < len(frames) < 178 and capture.corrupt == 178 - len(frames)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    import re

    first = re.fullmatch(rf"{re.escape(str(path))}: frame (\d+) \(t=([\d.]+) s\) cannot be decoded .*", warnings[0])
    assert first and 80 < int(first.group(1)) < 100, warnings  # the damage starts half way through the data
    assert float(first.group(2)) == pytest.approx(int(first.group(1)) / 30, abs=0.1)  # container stamps
    assert f"{178 - len(frames)} of 178 frames could not be decoded" in warnings[-1], warnings

    nothing = _damaged_copy(clips, tmp_path, 0.0, 1.0)
    capture = open_capture(CameraConfig(source=str(nothing), realtime=False))
    try:
        assert drain(capture, 30) == []
    finally:
        capture.stop()
    assert capture.state == "failed" and "no frame could be decoded" in (capture.error or "")


def test_the_daemon_and_the_tools_read_the_same_media_time_from_a_file(data_dir: Path) -> None:
    # One clock for both readers of files: `run` (VideoFileSource) and `detect`/`eval` (VideoFrames) agree.
    from fallwatch.daemon.app.pipeline import VideoFrames

    path = str(data_dir / "gmdcsa24-dev" / CLIP_30FPS)
    tools = [t for _, t, _ in VideoFrames(path)]
    source = srcmod.VideoFileSource(path, fallback_fps=15.0)
    source.open()
    daemon: list[float] = []
    try:
        with pytest.raises(srcmod.EndOfStream):
            while True:
                read = source.read()
                if read is not None:
                    daemon.append(read[1])
    finally:
        source.close()
    assert len(tools) == len(daemon) > 100 and tools == daemon
