"""Night enhancement: stretch a dark, low-contrast, noisy model input before inference.

A NoIR camera at night, or a dim room, gives a grey, dark, flat and grainy picture; the pose models were trained
on daylight photos and their keypoint scores halve on it. What each model sees (the estimator's crop, the
detector's input) is measured first: its mean luminance and its contrast (the standard deviation of the
luminance), both on the 0..255 scale. In ``auto`` mode only an input both darker than ``dark_luma`` and flatter
than ``low_contrast`` is changed (a lit room measures 100..150 and 50..70; the night look 40..60 and 20..40): a
pass at half resolution averages the sensor grain away, then CLAHE (contrast-limited adaptive histogram
equalisation) stretches the luminance tile by tile; colour, if any, is kept. Any other input is left as it is,
bit for bit.

The measure is taken on the model's own input (the crop, not the whole frame): a dark bedroom with a lit doorway
is dark where the person is, whatever the frame's average says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

MODES = ("auto", "on", "off")


@dataclass
class EnhanceSettings:
    mode: str = "auto"  # auto: only dark, flat inputs | on: every input | off: never
    dark_luma: float = 80.0  # mean luminance (0..255) below which an input counts as dark...
    low_contrast: float = 45.0  # ...and luminance standard deviation (0..255) below which it counts as flat
    clip_limit: float = 2.0  # CLAHE's contrast limit: how far a tile's histogram may be stretched
    denoise: bool = True  # average the grain away (at half resolution) before stretching an enhanced input


@dataclass
class Measure:
    luma: float  # mean luminance, 0..255
    contrast: float  # luminance standard deviation, 0..255
    enhanced: bool


def measure(image: np.ndarray) -> tuple[float, float]:
    """(mean luminance, luminance standard deviation) of an RGB uint8 image, on every 4th pixel each way, leaving
    out pure black (the padding around a crop that reaches past the frame's edge)."""
    sample = image[::4, ::4]
    y = cv2.cvtColor(np.ascontiguousarray(sample), cv2.COLOR_RGB2GRAY) if image.ndim == 3 else sample
    lit = y[y > 0]
    if lit.size < 16:
        return float(y.mean()), float(y.std())
    mean, std = cv2.meanStdDev(lit)
    return float(mean[0, 0]), float(std[0, 0])


class Enhancer:
    """Enhances model inputs in place and keeps the figures the bench and the debug page show."""

    def __init__(self, settings: EnhanceSettings):
        if settings.mode not in MODES:
            raise ValueError(f"pose.enhance.mode must be one of {', '.join(MODES)}, not {settings.mode!r}")
        self.settings = settings
        self._clahe = cv2.createCLAHE(clipLimit=settings.clip_limit, tileGridSize=(4, 4))
        self.last: Optional[Measure] = None  # the newest estimator crop's figures
        self.total_ms = 0.0  # time spent measuring and enhancing, since start
        self.calls = 0
        self.enhanced = 0

    def wanted(self, luma: float, contrast: float) -> bool:
        s = self.settings
        if s.mode == "on":
            return True
        if s.mode == "off":
            return False
        return luma < s.dark_luma and contrast < s.low_contrast

    def apply(self, image: np.ndarray, remember: bool = True) -> bool:
        """Enhance an HxWx3 uint8 RGB model input in place when it needs it; True if it was changed."""
        if self.settings.mode == "off" or image.dtype != np.uint8:  # (every model fallwatch runs takes uint8)
            return False
        t0 = time.perf_counter()
        luma, contrast = measure(image)
        on = self.wanted(luma, contrast)
        if on:
            self._enhance(image)
            self.enhanced += 1
        if remember:
            self.last = Measure(luma, contrast, on)
        self.total_ms += (time.perf_counter() - t0) * 1000.0
        self.calls += 1
        return on

    def _enhance(self, image: np.ndarray) -> None:
        s = image[::8, ::8]
        mono = bool((s[..., 0] == s[..., 1]).all() and (s[..., 1] == s[..., 2]).all())
        if mono:  # an IR picture: one channel is all there is
            cv2.cvtColor(self._equalize(image[..., 0]), cv2.COLOR_GRAY2RGB, dst=image)
            return
        ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
        ycc[..., 0] = self._equalize(ycc[..., 0])
        cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB, dst=image)

    def _equalize(self, luma: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(luma)
        if self.settings.denoise:  # average the grain away at half resolution (cheaper than any blur kernel)
            h, w = y.shape
            y = cv2.resize(
                cv2.resize(y, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR
            )
        return self._clahe.apply(y)

    def figures(self) -> dict[str, object]:
        """What the debug page and /api/stats show: the mode, whether the newest crop was enhanced, its figures."""
        last = self.last
        return {
            "mode": self.settings.mode,
            "on": bool(last and last.enhanced),
            "luma": None if last is None else round(last.luma, 1),
            "contrast": None if last is None else round(last.contrast, 1),
            "enhanced_fraction": round(self.enhanced / self.calls, 3) if self.calls else 0.0,
        }
