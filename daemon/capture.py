"""Camera capture: open the configured source, read frames in a thread, keep only the newest.

Sources (``camera.source``): ``auto``, ``picamera2``, ``v4l2:/dev/videoN``, ``rtsp://…``/``http://…``, a video file
or a folder of images. Frames leave as RGB uint8 arrays, rotated and flipped as configured.

Why a thread with a one-frame slot: a camera runs at its own pace; when inference is slower, the frame it would
process next must be the newest one (latency stays at one inference time), so older frames are overwritten and
counted as dropped instead of queueing without bound. Video files played as fast as possible (``realtime:
false``) are the exception: there every frame is wanted, so the reader waits for the consumer instead.

Time stamps: ``t`` is media time for files and folders (frame index / fps, continuing across loops) and capture
time (``time.monotonic()``) for cameras; the rules only ever compare ``t`` values with each other.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fallwatch.config.loader import redact_url

from .images import ImageError, read_image_bgr

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
# /dev/video* nodes on a Pi that are codecs or ISPs, not cameras (their sysfs name contains one of these).
NON_CAMERA_V4L2 = ("codec", "isp", "rpivid", "pispbe", "hevc", "rp1-cfe", "unicam-embedded", "bcm2835-v4l2-isp")
OPEN_TIMEOUT_MS = 5000  # network streams: give up on an open or a read after this long (then back off)
MIN_FRAME_SIDE = 16
FAILED_READS_BEFORE_REOPEN = 3
PACE_JUMP_S = 5.0  # realtime files: a frame due further ahead than this is a jump in the time stamps, not a wait


class SourceError(Exception):
    """The source cannot be used at all (not a transient camera failure). The message is one line."""


class EndOfStream(Exception):
    """A file or folder source has no more frames."""


@dataclass
class Frame:
    image: np.ndarray  # RGB uint8, H x W x 3
    t: float  # seconds: media time (files) or monotonic capture time (cameras)
    frame_no: int  # source frame number (counts dropped frames too)
    captured: float  # time.monotonic() when the frame was read


class Source:
    """One kind of frame source. ``read`` returns an image (RGB or BGR as ``bgr`` says) and its time stamp,
    returns None for a failed read, or raises EndOfStream."""

    name = "source"
    is_file = False  # files and folders: media time, EOF, pacing; cameras: reopen on failure
    bgr = True  # OpenCV delivers BGR
    fps: Optional[float] = None

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        raise NotImplementedError

    def rewind(self) -> None:
        raise EndOfStream()

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


def _cv2() -> Any:
    import cv2  # imported lazily: `fallwatch check-config` must not pay for OpenCV

    return cv2


class VideoFileSource(Source):
    is_file = True

    def __init__(self, path: str, fallback_fps: float):
        self.path = path
        self.name = f"file:{path}"
        self.fallback_fps = fallback_fps
        self.cap: Any = None
        self.index = 0  # frames read in this pass
        self.attempts = 0  # reads tried in this pass, decoded or not
        self.damaged = 0  # reads that failed before the end of the file, in this pass
        self.frame_count = 0  # what the container says (0: unknown)
        self.loop_offset = 0.0  # media time at the start of this pass (loop: true)
        self.last_t = -1.0

    def open(self) -> None:
        cv2 = _cv2()
        self.cap = cv2.VideoCapture(self.path)
        if not self.cap.isOpened():
            self.cap.release()
            if not os.path.isfile(self.path):
                raise SourceError(f"camera.source {self.path}: no such file")
            raise SourceError(f"camera.source {self.path}: cannot decode this file as video")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
            log.warning("%s: the file does not state its frame rate; assuming camera.fps=%g", self.path,
                        self.fallback_fps)
            fps = self.fallback_fps
        self.fps = float(fps)
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and math.isfinite(count) and count > 0 else 0

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        ok, image = self.cap.read()
        self.attempts += 1
        if not ok:
            # A failed read before the frame count the container states is damage, not the end: FFmpeg goes on
            # with the frames after it. Only a file that ends early, or yields nothing, is the end.
            where = f"frame {self.attempts - 1} (t={self.last_t + 1.0 / self.fps if self.index else 0.0:.2f} s)"
            if self.attempts < self.frame_count:
                if not self.damaged:
                    log.warning("%s: %s cannot be decoded (damaged file?); skipping what cannot be", self.path, where)
                self.damaged += 1
                return None
            if self.index == 0:
                raise SourceError(f"camera.source {self.path}: no frame could be decoded (damaged file?)")
            if self.damaged:
                log.warning("%s: %d of %d frames could not be decoded (damaged file)", self.path, self.damaged,
                            max(self.frame_count, self.attempts - 1))
            elif self.frame_count and self.index < self.frame_count - 1:
                log.warning("%s: ended at %s, before the %d frames it states (truncated?)", self.path, where,
                            self.frame_count)
            raise EndOfStream()
        # The container's time stamp when there is one (as `fallwatch detect` uses, so both agree), else
        # index / fps; always increasing, and continuing across loops.
        ms = self.cap.get(_cv2().CAP_PROP_POS_MSEC)
        t = ms / 1000.0 if ms and ms > 0 else self.index / self.fps
        t = self.loop_offset + t
        if t <= self.last_t:
            t = max(self.loop_offset + self.index / self.fps, self.last_t + 1e-3)
        self.last_t = t
        self.index += 1
        return image, t

    def rewind(self) -> None:
        if self.index == 0:  # looping a file that yields nothing would spin for ever
            raise SourceError(f"camera.source {self.path}: no frame could be decoded")
        self.cap.release()
        self.open()
        self.loop_offset = self.last_t + 1.0 / (self.fps or self.fallback_fps)
        self.index = self.attempts = self.damaged = 0

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def describe(self) -> str:
        return f"video file {self.path} ({self.fps or 0:.2f} fps)"


def natural_key(path: str) -> list:
    """Sort key putting frame_2 before frame_10 (exported frames are often not zero-padded)."""
    return [(0, int(part), part) if part.isdecimal() else (1, 0, part)
            for part in re.split(r"(\d+)", os.path.basename(path)) if part]


class ImageFolderSource(Source):
    is_file = True

    def __init__(self, path: str, fps: float):
        self.path = path
        self.name = f"folder:{path}"
        self.fps = float(fps)
        self.files: list[str] = []
        self.pos = 0
        self.index = 0
        self.decoded_in_pass = False

    def open(self) -> None:
        self.files = sorted((str(p) for p in Path(self.path).iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        if not self.files:
            raise SourceError(f"camera.source {self.path}: the folder holds no images "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        self.pos = 0

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        if self.pos >= len(self.files):
            raise EndOfStream()
        file = self.files[self.pos]
        self.pos += 1
        t = self.index / self.fps
        self.index += 1
        try:
            image = read_image_bgr(file)  # refuses, or downscales, what is above the size limit
        except ImageError as exc:
            log.warning("%s", exc)
            return None
        self.decoded_in_pass = True
        return image, t

    def rewind(self) -> None:
        if not self.decoded_in_pass:  # looping images that all fail to decode would spin for ever
            raise SourceError(f"camera.source {self.path}: no image in the folder could be decoded")
        self.pos = 0
        self.decoded_in_pass = False

    def describe(self) -> str:
        return f"image folder {self.path} ({len(self.files)} images at {self.fps:g} fps)"


class OpenCVCameraSource(Source):
    """A V4L2 device or a network stream (RTSP/HTTP through OpenCV's FFmpeg backend)."""

    def __init__(self, target: str, width: int, height: int, fps: float):
        self.target = target
        self.is_device = not target.startswith(STREAM_SCHEMES)
        self.name = f"v4l2:{target}" if self.is_device else redact_url(target)
        self.width, self.height, self.fps = width, height, fps
        self.cap: Any = None

    def open(self) -> None:
        cv2 = _cv2()
        if self.is_device:
            if not os.path.exists(self.target):
                raise OSError(f"{self.target} does not exist")
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
                cap.set(cv2.CAP_PROP_FPS, self.fps)
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        else:
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
        if not cap.isOpened():
            cap.release()
            raise OSError(f"cannot open {self.name}")
        self.cap = cap

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        ok, image = self.cap.read()
        return (image, time.monotonic()) if ok else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def describe(self) -> str:
        return self.name


# libcamera's (draft) NoiseReductionMode values.
NOISE_REDUCTION = {"off": 0, "fast": 1, "high_quality": 2}


def picamera2_controls(camera: Any) -> dict[str, Any]:
    """The libcamera controls for ``camera`` (a CameraConfig): the frame rate, and how far the auto-exposure may
    go at night. FrameDurationLimits (microseconds) lets a frame last from 1/fps up to 1/min_fps: in a dark room
    the auto-exposure lengthens the exposure (less noise than more gain) but the rate never falls below min_fps.
    """
    fps = float(camera.fps)
    min_fps = min(float(camera.min_fps or fps), fps)
    controls: dict[str, Any] = {"FrameDurationLimits": (int(round(1e6 / fps)), int(round(1e6 / min_fps)))}
    if camera.exposure_ms is not None:
        controls["ExposureTime"] = int(round(camera.exposure_ms * 1000.0))
    if camera.analogue_gain is not None:
        controls["AnalogueGain"] = float(camera.analogue_gain)
    if camera.noise_reduction != "auto":
        controls["NoiseReductionMode"] = NOISE_REDUCTION[camera.noise_reduction]
    return controls


class PiCamera2Source(Source):
    """The Raspberry Pi camera through picamera2 (apt's python3-picamera2). Imported only when chosen."""

    name = "picamera2"

    def __init__(self, width: int, height: int, fps: float, controls: Optional[dict[str, Any]] = None):
        self.width, self.height, self.fps = width, height, fps
        self.controls = controls or {"FrameRate": float(fps)}
        self.cam: Any = None

    def open(self) -> None:
        Picamera2 = import_picamera2()
        if not Picamera2.global_camera_info():
            raise OSError("picamera2 sees no camera attached")
        cam = Picamera2()
        try:
            # "RGB888" is stored B, G, R per pixel (libcamera's naming), i.e. what OpenCV calls BGR.
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls=dict(self.controls), buffer_count=4)
            cam.configure(config)
            cam.start()
        except Exception:
            cam.close()
            raise
        self.cam = cam

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        image = self.cam.capture_array("main")
        return image, time.monotonic()

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
            finally:
                self.cam.close()
                self.cam = None


def import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or libcamera failing inside the import
        raise SourceError(f"camera.source picamera2: picamera2 cannot be imported ({exc}); on Raspberry Pi OS "
                          f"run `apt install python3-picamera2` and create the venv with "
                          f"--system-site-packages") from None
    return Picamera2


def v4l2_cameras(dev_dir: str = "/dev", sysfs_dir: str = "/sys/class/video4linux") -> list[str]:
    """/dev/video* nodes that look like cameras: capture nodes (index 0), not Pi codecs or ISPs."""
    found = []
    devices = glob.glob(os.path.join(dev_dir, "video*"))
    for dev in sorted(devices, key=lambda d: int("0" + "".join(c for c in os.path.basename(d) if c.isdigit()))):
        sysfs = Path(sysfs_dir) / os.path.basename(dev)
        try:
            name = (sysfs / "name").read_text().strip().lower()
        except OSError:
            name = ""
        try:
            index = int((sysfs / "index").read_text().strip())
        except (OSError, ValueError):
            index = 0
        if index != 0 or any(word in name for word in NON_CAMERA_V4L2):
            continue
        found.append(dev)
    return found


def picamera2_available() -> bool:
    try:
        Picamera2 = import_picamera2()
        return bool(Picamera2.global_camera_info())
    except Exception as exc:
        log.debug("no Pi camera through picamera2 (%s)", exc)
        return False


def make_source(camera: Any, source: Optional[str] = None) -> Source:
    """The Source for ``source`` (default ``camera.source``); SourceError with one line when it cannot be."""
    spec = (source or camera.source).strip()
    w, h, fps = camera.width, camera.height, camera.fps
    if spec == "auto":
        if picamera2_available():
            return PiCamera2Source(w, h, fps, picamera2_controls(camera))
        devices = v4l2_cameras()
        if devices:
            log.info("camera.source auto: using %s", devices[0])
            return OpenCVCameraSource(devices[0], w, h, fps)
        raise SourceError("no camera found (no Pi camera, no /dev/video*); set camera.source or use --source FILE")
    if spec == "picamera2":
        import_picamera2()  # a clear error now rather than a retry loop on a missing package
        return PiCamera2Source(w, h, fps, picamera2_controls(camera))
    if spec.startswith("v4l2:"):
        return OpenCVCameraSource(spec[len("v4l2:"):] or "/dev/video0", w, h, fps)
    if spec.startswith("/dev/"):
        return OpenCVCameraSource(spec, w, h, fps)
    if spec.startswith(STREAM_SCHEMES):
        return OpenCVCameraSource(spec, w, h, fps)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(str(path), fps)
    if path.is_file():
        return VideoFileSource(str(path), fps)
    raise SourceError(f"camera.source {spec}: no such file or folder (and not auto, picamera2, v4l2:/dev/videoN, "
                      f"rtsp:// or http://)")


def to_rgb(image: Any, bgr: bool) -> Optional[np.ndarray]:
    """A valid RGB uint8 frame, or None for a corrupt/wrong one (empty, wrong dtype, odd shape)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # greyscale (IR) cameras
        bgr = False
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < MIN_FRAME_SIDE:
        return None
    image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1] if bgr else image)


def transform(image: np.ndarray, rotate: int, flip: str) -> np.ndarray:
    """Mirror first (it corrects the sensor), then rotate clockwise (it corrects the mounting)."""
    if flip in ("horizontal", "both"):
        image = image[:, ::-1]
    if flip in ("vertical", "both"):
        image = image[::-1]
    if rotate:
        image = np.rot90(image, k=-(rotate // 90))  # negative k: clockwise
    return np.ascontiguousarray(image) if (rotate or flip != "none") else image


class Capture:
    """Reads ``source`` in its own thread; ``get()`` returns the newest frame not yet taken."""

    def __init__(self, source: Source, rotate: int = 0, flip: str = "none", realtime: bool = True,
                 loop: bool = False, reopen_max_s: float = 30.0, reopen_min_s: float = 0.5):
        self.source = source
        self.rotate, self.flip = rotate, flip
        self.realtime, self.loop = realtime, loop
        self.reopen_min_s, self.reopen_max_s = reopen_min_s, max(reopen_min_s, reopen_max_s)
        self.lossless = source.is_file and not realtime  # as fast as possible, but every frame
        self._cond = threading.Condition()
        self._slot: Optional[Frame] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.state = "starting"  # starting | running | reopening | eof | stopped | failed
        self.error: Optional[str] = None
        self.delivered = 0  # frames read and put in the slot
        self.taken = 0
        self.dropped = 0  # frames overwritten before inference took them
        self.corrupt = 0  # unreadable or malformed frames, skipped
        self.reopens = 0  # failed open/read attempts followed by a retry
        self.last_progress = time.monotonic()  # the thread is alive (read returned, or waiting to retry)
        self._opened = False
        self._frame_no = 0

    # -- consumer side ---------------------------------------------------------------------------------------
    def start(self) -> "Capture":
        """Open files now (a bad file is a SourceError for the caller); cameras open in the thread, with retry."""
        if self.source.is_file:
            self.source.open()
            self._opened = True
            self.state = "running"
            log.info("source: %s", self.source.describe())
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float = 0.5) -> Optional[Frame]:
        """The newest frame, or None after ``timeout`` (or at once when the source has ended)."""
        with self._cond:
            if self._slot is None and not self.ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            if frame is not None:
                self.taken += 1
                self._cond.notify_all()  # a lossless reader waits for the slot to empty
            return frame

    @property
    def ended(self) -> bool:
        """The source will deliver nothing more (EOF without loop, a fatal error, or stop())."""
        return self.state in ("eof", "stopped", "failed")

    @property
    def finished(self) -> bool:
        """Ended and the last frame has been taken."""
        with self._cond:
            return self.ended and self._slot is None

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            # A camera driver can block in read(); the thread is a daemon, so do not wait for it forever.
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread still blocked in the source after %.1fs; leaving it", timeout)
        if not self.ended:
            self.state = "stopped"
        if self._thread is None or not self._thread.is_alive():
            self._close()

    def stats(self) -> dict[str, Any]:
        return {"source": self.source.name, "state": self.state, "delivered": self.delivered,
                "dropped": self.dropped, "corrupt": self.corrupt, "reopens": self.reopens,
                "source_fps": self.source.fps, "error": self.error}

    # -- capture thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.reopen_min_s
        failed_reads = 0
        bad_run = False  # the last frame read was malformed
        pace_start: Optional[tuple[float, float]] = None  # (monotonic, t) of the first paced frame
        try:
            while not self._stop.is_set():
                self.last_progress = time.monotonic()
                if not self._opened:
                    try:
                        self.source.open()
                    except SourceError as exc:  # will not get better by retrying
                        self.error = str(exc)
                        self.state = "failed"
                        log.error("%s", exc)
                        break
                    except Exception as exc:
                        self.reopens += 1
                        self.error = f"{exc}"
                        self.state = "reopening"
                        log.warning("camera %s unavailable: %s; retrying in %gs (attempt %d)",
                                    self.source.name, exc, round(backoff, 3), self.reopens)
                        self._sleep(backoff)
                        backoff = min(backoff * 2, self.reopen_max_s)
                        continue
                    self._opened = True
                    failed_reads = 0
                    self.state = "running"
                    self.error = None
                    log.info("source: %s opened", self.source.describe())
                try:
                    got = self.source.read()
                except EndOfStream:
                    if self.loop:
                        try:
                            self.source.rewind()
                        except EndOfStream:
                            self.state = "eof"
                            break
                        except SourceError as exc:  # the file went away or changed under us
                            self.error = str(exc)
                            self.state = "failed"
                            log.error("%s", exc)
                            break
                        log.info("%s: end of file, looping", self.source.name)
                        continue
                    self.state = "eof"
                    log.info("%s: end of source after %d frames", self.source.name, self._frame_no)
                    break
                except SourceError as exc:  # a file with no decodable frame
                    self.error = str(exc)
                    self.state = "failed"
                    log.error("%s", exc)
                    break
                except Exception as exc:  # a camera driver error: treat like a failed read
                    log.warning("camera %s read error: %s", self.source.name, exc)
                    got = None
                if got is None:
                    if self.source.is_file:
                        self.corrupt += 1  # an undecodable image in a folder
                        self._frame_no += 1
                        continue
                    failed_reads += 1
                    if failed_reads >= FAILED_READS_BEFORE_REOPEN:
                        self.reopens += 1
                        self.state = "reopening"
                        self.error = "no frames"
                        log.warning("camera %s stopped delivering frames; reopening in %gs",
                                    self.source.name, round(backoff, 3))
                        self._close()
                        self._sleep(backoff)
                        backoff = min(backoff * 2, self.reopen_max_s)
                    continue
                failed_reads = 0
                backoff = self.reopen_min_s
                image, t = got
                frame_no = self._frame_no
                self._frame_no += 1
                rgb = to_rgb(image, self.source.bgr)
                if rgb is None:
                    self.corrupt += 1
                    what = getattr(image, "shape", type(image).__name__)
                    self.error = f"malformed frames ({what})"
                    if not bad_run:  # once per run of bad frames: a camera in a wrong mode sends only these
                        log.warning("%s: frame %d is malformed (%s); skipping such frames", self.source.name,
                                    frame_no, what)
                        bad_run = True
                    continue
                if bad_run:
                    bad_run = False
                    self.error = None
                rgb = transform(rgb, self.rotate, self.flip)
                if self.source.is_file and self.realtime:
                    now = time.monotonic()
                    if pace_start is None:
                        pace_start = (now, t)
                    due = pace_start[0] + (t - pace_start[1])
                    if due - now > PACE_JUMP_S:
                        pace_start = (now, t)  # the time stamps jump ahead (joined recordings): play on
                    elif due > now:
                        self._sleep(due - now)
                    elif now - due > 1.0:
                        pace_start = (now, t)  # fell far behind (slow decode): do not race to catch up
                self._put(Frame(rgb, float(t), frame_no, time.monotonic()))
        except Exception:
            log.exception("capture thread failed")
            self.error = "capture thread failed"
            self.state = "failed"
        finally:
            if self._stop.is_set() and not self.ended:
                self.state = "stopped"
            with self._cond:
                self._cond.notify_all()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.lossless:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.2)
                    self.last_progress = time.monotonic()
            elif self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self.delivered += 1
            self._cond.notify_all()

    def _sleep(self, seconds: float) -> None:
        """Interruptible by stop(); keeps last_progress fresh so a waiting thread is not taken for a hung one."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            self._stop.wait(min(left, 0.5))
            self.last_progress = time.monotonic()

    def _close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                self.source.close()
            except Exception as exc:
                log.debug("closing %s: %s", self.source.name, exc)


def open_capture(camera: Any, source: Optional[str] = None) -> Capture:
    """A started Capture for the camera configuration (``camera`` is config.schema.CameraConfig)."""
    src = make_source(camera, source)
    return Capture(src, rotate=camera.rotate, flip=camera.flip, realtime=camera.realtime, loop=camera.loop,
                   reopen_max_s=camera.reopen_max_s).start()
