"""One Euro filter (Casiez et al., 2012) over a person's keypoints, vectorised over all keypoints of one track.

Strong smoothing when a keypoint is still, little lag when it moves fast: the cutoff frequency rises with the
filtered speed. The speed is measured in person sizes per second (MediaPipe scales by the object size too), so
``beta`` does not depend on how far the person is from the camera.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    def __init__(self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: Optional[np.ndarray] = None  # last filtered positions (n, 2), pixels
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, kps: np.ndarray, t: float, scale: float) -> np.ndarray:
        """Filter (n, 3) keypoints (x, y, score) at time t; ``scale`` is the person's size in pixels."""
        scale = max(float(scale), 1.0)
        x = kps[:, :2].astype(np.float64)
        out = kps.copy()
        if self._x is None or self._dx is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x, np.zeros_like(x), t
            return out
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / scale
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = t
        out[:, :2] = self._x
        return out
