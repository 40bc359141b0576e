"""Helpers the pose tests share: reading a real image as RGB, and an Edge TPU interpreter that has gone away."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def load_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class FailingInterpreter:
    """Stands in for an Edge TPU interpreter whose device went away: every invoke raises."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def invoke(self) -> None:
        raise RuntimeError("Failed to invoke: USB transfer error (device unplugged)")
