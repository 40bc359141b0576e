"""Time in a video file, for both readers of files (the daemon's VideoFileSource and the tools' VideoFrames): the
frame rate the container states, and media time from its time stamps, so `run`, `detect` and `eval` agree."""

from __future__ import annotations

import logging
import math
from typing import Any

from fallwatch.config.schema import CameraConfig

log = logging.getLogger(__name__)

FALLBACK_FPS = float(CameraConfig.model_fields["fps"].default)  # a file that states no frame rate: camera.fps


def stated_fps(cap: Any, path: str, fallback: float = FALLBACK_FPS) -> float:
    """The container's frame rate, or ``fallback`` (with a warning) when it states none that makes sense."""
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
        log.warning("%s: the file does not state its frame rate; assuming %g fps", path, fallback)
        return float(fallback)
    return float(fps)


class MediaClock:
    """Media time of each decoded frame: the container's stamp (CAP_PROP_POS_MSEC) when it gives one, else
    index / fps; always increasing (some backends report 0 or repeat a stamp), and continuing across loops."""

    def __init__(self, fps: float):
        self.fps = fps
        self.last_t = -1.0

    def stamp(self, pos_msec: float, index: int, offset: float = 0.0) -> float:
        t = offset + (pos_msec / 1000.0 if pos_msec and pos_msec > 0 else index / self.fps)
        if t <= self.last_t:
            t = max(offset + index / self.fps, self.last_t + 1e-3)
        self.last_t = t
        return t
