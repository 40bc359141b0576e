"""Frame sources: what ``camera.source`` names, opened and read one frame at a time.

``camera.source``: ``auto``, ``picamera2``, ``libcamera``, ``v4l2:/dev/videoN``, ``rtsp://…``/``http://…``, a
video file or a folder of images. :func:`make_source` picks the Source; the Capture thread (capture/reader.py) reads it.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fallwatch.config.loader import redact_url
from fallwatch.daemon.capture.images import ImageError, read_image_bgr
from fallwatch.daemon.capture.media_time import MediaClock, stated_fps
from fallwatch.daemon.capture.pi_camera import (
    PiCamera2Source,
    picamera2_available,
    picamera2_controls,
    picamera2_source,
)
from fallwatch.daemon.capture.source import EndOfStream, Source, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
# /dev/video* nodes on a Pi that are codecs or ISPs, not cameras (their sysfs name contains one of these).
NON_CAMERA_V4L2 = ("codec", "isp", "rpivid", "pispbe", "hevc", "rp1-cfe", "unicam-embedded", "bcm2835-v4l2-isp")
OPEN_TIMEOUT_MS = 5000  # network streams: give up on an open or a read after this long (then back off)


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
        self.fps = stated_fps(self.cap, self.path, self.fallback_fps)
        self.clock = MediaClock(self.fps)
        self.clock.last_t = self.last_t  # (a reopened or looped file keeps time moving forward)
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and math.isfinite(count) and count > 0 else 0

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        ok, image = self.cap.read()
        self.attempts += 1
        fps = self.fps or self.fallback_fps  # (open() has set fps)
        if not ok:
            # A failed read before the frame count the container states is damage, not the end: FFmpeg goes on
            # with the frames after it. Only a file that ends early, or yields nothing, is the end.
            where = f"frame {self.attempts - 1} (t={self.last_t + 1.0 / fps if self.index else 0.0:.2f} s)"
            if self.attempts < self.frame_count:
                if not self.damaged:
                    log.warning("%s: %s cannot be decoded (damaged file?); skipping what cannot be", self.path, where)
                self.damaged += 1
                return None
            if self.index == 0:
                raise SourceError(f"camera.source {self.path}: no frame could be decoded (damaged file?)")
            if self.damaged:
                log.warning(
                    "%s: %d of %d frames could not be decoded (damaged file)",
                    self.path,
                    self.damaged,
                    max(self.frame_count, self.attempts - 1),
                )
            elif self.frame_count and self.index < self.frame_count - 1:
                log.warning(
                    "%s: ended at %s, before the %d frames it states (truncated?)", self.path, where, self.frame_count
                )
            raise EndOfStream()
        # The container's time stamp when there is one (as `fallwatch detect` uses, so both agree), else
        # index / fps; always increasing, and continuing across loops.
        t = self.last_t = self.clock.stamp(self.cap.get(_cv2().CAP_PROP_POS_MSEC), self.index, self.loop_offset)
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
    return [
        (0, int(part), part) if part.isdecimal() else (1, 0, part)
        for part in re.split(r"(\d+)", os.path.basename(path))
        if part
    ]


class ImageFolderSource(Source):
    is_file = True

    def __init__(self, path: str, fps: float):
        self.path = path
        self.name = f"folder:{path}"
        self.rate = self.fps = float(fps)
        self.files: list[str] = []
        self.pos = 0
        self.index = 0
        self.decoded_in_pass = False

    def open(self) -> None:
        self.files = sorted(
            (str(p) for p in Path(self.path).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=natural_key,
        )
        if not self.files:
            raise SourceError(f"camera.source {self.path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.pos = 0

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        if self.pos >= len(self.files):
            if not self.decoded_in_pass:  # as a video with no decodable frame: a failure, not an end (exit 1)
                raise SourceError(f"camera.source {self.path}: no image in the folder could be decoded")
            raise EndOfStream()
        file = self.files[self.pos]
        self.pos += 1
        t = self.index / self.rate
        self.index += 1
        try:
            image = read_image_bgr(file)  # refuses, or downscales, what is above the size limit
        except ImageError as exc:
            log.warning("%s", exc)
            return None
        self.decoded_in_pass = True
        return image, t

    def rewind(self) -> None:  # (read ends a pass that decoded nothing with a SourceError, so looping never spins)
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
            cap = cv2.VideoCapture(
                self.target,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS],
            )
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
    if spec == "picamera2":  # (a clear error now rather than a retry loop on a missing package)
        return picamera2_source(w, h, fps, picamera2_controls(camera))
    if spec == "libcamera":
        from fallwatch.daemon.capture.libcamera_source import LibcameraSource, import_libcamera

        import_libcamera()
        return LibcameraSource(w, h, fps, picamera2_controls(camera))
    if spec.startswith("v4l2:"):
        return OpenCVCameraSource(spec[len("v4l2:") :] or "/dev/video0", w, h, fps)
    if spec.startswith("/dev/"):
        return OpenCVCameraSource(spec, w, h, fps)
    if spec.startswith(STREAM_SCHEMES):
        return OpenCVCameraSource(spec, w, h, fps)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(str(path), fps)
    if path.is_file():
        return VideoFileSource(str(path), fps)
    raise SourceError(
        f"camera.source {spec}: no such file or folder "
        f"(and not auto, picamera2, libcamera, v4l2:/dev/videoN, rtsp:// or http://)"
    )
