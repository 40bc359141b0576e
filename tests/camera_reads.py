"""Reading a camera source directly, as the capture thread does, for the camera source tests."""

from __future__ import annotations

import numpy as np
from fallwatch.daemon.capture.source import Source


def read_frames(source: Source, n: int) -> list[tuple[np.ndarray, float]]:
    """The next ``n`` (image, time) pairs of an opened source; each read must give a frame."""
    frames = []
    while len(frames) < n:
        got = source.read()
        assert got is not None, "no frame within the read timeout"
        frames.append(got)
    return frames
