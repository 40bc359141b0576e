"""When a libcamera frame was captured, and the pace of a camera that ignores its frame rate.

Shared by the ``picamera2`` source and the ``libcamera`` source (both read libcamera cameras). A camera that honours
FrameDurationLimits delivers at ``camera.fps`` by itself; one that completes each request as soon as it is asked
for (libcamera's virtual camera) would otherwise run as fast as the CPU allows. Once two frames come closer than
half a frame period, :class:`FramePacer` asks for one frame per period.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Optional

log = logging.getLogger(__name__)


def sensor_time(metadata: Mapping[str, Any]) -> Optional[float]:
    """The frame's ``SensorTimestamp`` (nanoseconds on CLOCK_MONOTONIC, the clock of ``time.monotonic()``) in
    seconds, or None where the camera did not set it."""
    value = metadata.get("SensorTimestamp")
    return float(value) / 1e9 if value else None


class FramePacer:
    """Notices a camera that delivers frames as fast as they are asked for, and from then on makes the reader ask
    for one every 1/fps s."""

    def __init__(self, fps: float, camera: str):
        self.rate = float(fps)
        self.camera = camera  # how the log line names it, e.g. "libcamera camera FallClip"
        self.reset()

    def reset(self) -> None:
        """A (re)started camera: not paced until it shows it must be."""
        self.paced = False
        self.next_due = 0.0
        self.last_t: Optional[float] = None

    def wait(self) -> bool:
        """Before asking for a frame: when paced, sleep until it is due. Returns whether the camera is paced."""
        if not self.paced:
            return False
        wait = self.next_due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        # on a grid of periods; a late read does not make the next one come at once (never two frames closer than
        # half a period: the picture must not jump ahead)
        self.next_due = max(self.next_due + 1.0 / self.rate, time.monotonic() + 0.5 / self.rate)
        return True

    def saw(self, t: float, before: Optional[float] = None) -> None:
        """A frame captured at ``t``; ``before``: the capture time of the frame just before it, where known (else
        the last frame seen)."""
        before = self.last_t if before is None else before
        if not self.paced and before is not None and t - before < 0.5 / self.rate:
            self.paced = True
            self.next_due = time.monotonic() + 1.0 / self.rate
            log.info(
                "%s delivers frames as fast as they are asked for (%.1f ms apart, not %.1f ms): "
                "asking for one every 1/%g s",
                self.camera,
                (t - before) * 1000.0,
                1000.0 / self.rate,
                self.rate,
            )
        self.last_t = t
