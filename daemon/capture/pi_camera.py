"""The Raspberry Pi camera through picamera2 (Raspberry Pi OS's ``python3-picamera2``): its controls from the
configuration, the source, and whether one is there. Where picamera2 cannot be imported but libcamera's own Python
bindings can (Debian), ``picamera2_source`` falls back to those (capture/libcamera_source.py) in one line.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import numpy as np
from fallwatch.daemon.capture.camera_timing import FramePacer, sensor_time
from fallwatch.daemon.capture.source import Source, SourceError

log = logging.getLogger(__name__)


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
    """The Raspberry Pi camera through picamera2 (apt's python3-picamera2). Imported only when chosen.

    Frames carry the camera's SensorTimestamp (time.monotonic()'s clock) and are paced as the libcamera source's
    (capture/camera_timing.py)."""

    name = "picamera2"

    def __init__(self, width: int, height: int, fps: float, controls: Optional[dict[str, Any]] = None):
        self.width, self.height, self.fps = width, height, fps
        self.controls = controls or {"FrameRate": float(fps)}
        self.cam: Any = None
        self.pacer = FramePacer(fps, "picamera2 camera")

    def open(self) -> None:
        Picamera2 = import_picamera2()
        if not Picamera2.global_camera_info():
            raise OSError("picamera2 sees no camera attached")
        cam = Picamera2()
        try:
            # "RGB888" is stored B, G, R per pixel (libcamera's naming), i.e. what OpenCV calls BGR.
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls=dict(self.controls),
                buffer_count=4,
            )
            cam.configure(config)
            cam.start()
        except Exception:
            cam.close()
            raise
        self.cam = cam
        model = (getattr(cam, "camera_properties", None) or {}).get("Model")
        self.pacer.camera = f"picamera2 camera {model}" if model else "picamera2 camera"
        self.pacer.reset()

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        self.pacer.wait()
        request = self.cam.capture_request()  # the image and the metadata of one frame
        try:
            image = request.make_array("main")  # (a copy: the buffer goes back to the camera below)
            t = sensor_time(request.get_metadata())
        finally:
            request.release()
        if t is None:
            t = time.monotonic()
        self.pacer.saw(t)
        return image, t

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
            finally:
                self.cam.close()
                self.cam = None


def import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2
    except Exception as exc:  # ImportError, or libcamera failing inside the import
        raise SourceError(
            f"camera.source picamera2: picamera2 cannot be imported ({exc}); on Raspberry Pi OS "
            f"run `apt install python3-picamera2` and create the venv with "
            f"--system-site-packages"
        ) from None
    return Picamera2


def picamera2_source(width: int, height: int, fps: float, controls: dict[str, Any]) -> Source:
    """picamera2, or libcamera's own Python bindings where picamera2 cannot be imported but they can (PyPI's
    picamera2 on Debian needs Raspberry Pi OS's pykms): the same camera, said in one line."""
    try:
        import_picamera2()
    except SourceError as picamera2_error:
        from fallwatch.daemon.capture.libcamera_source import LibcameraSource, import_libcamera

        try:
            import_libcamera()
        except SourceError:
            raise picamera2_error from None
        reason = str(picamera2_error).split(" cannot be imported (", 1)[-1].split("); ", 1)[0]
        log.warning(
            "camera.source picamera2: picamera2 cannot be imported (%s); reading the camera through libcamera's "
            "own Python bindings instead",
            reason,
        )
        return LibcameraSource(width, height, fps, controls)
    return PiCamera2Source(width, height, fps, controls)


def picamera2_available() -> bool:
    try:
        Picamera2 = import_picamera2()
        return bool(Picamera2.global_camera_info())
    except Exception as exc:
        log.debug("no Pi camera through picamera2 (%s)", exc)
        return False
