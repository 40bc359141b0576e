"""Helpers the pose tests share: reading a real image or clip as RGB, and an Edge TPU interpreter that has gone
away."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np


def load_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def video_frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """Each frame of a clip as (media time from the frame number and the clip's fps, RGB)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    assert fps > 0
    n = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield n / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()


def first_frames(path: Path, n: int) -> list[tuple[float, np.ndarray]]:
    """The clip's first n frames; the clip must have that many."""
    out = list(islice(video_frames(path), n))
    assert len(out) == n, (path, len(out))
    return out
