"""Single-person keypoint estimators on square crops: MoveNet SinglePose (Lightning / Thunder) and BlazePose full.

A crop is a square in frame pixels (centre, side) with an optional rotation of the crop content. One
``cv2.warpAffine`` does crop, border padding, rotation and resize at once into a pre-allocated input buffer, and the
same affine maps the model's keypoints back to frame pixels.

Every estimator is an :class:`Estimator` adapter (prepare input -> invoke -> decode) returning an :class:`Estimate`;
``ESTIMATORS`` maps a model's registry kind (pose/models.py) to its adapter.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .enhance import Enhancer
from .runtime import Model
from .world3d import WORLD_OUTPUT_SIZE, world_landmarks

log = logging.getLogger(__name__)

# BlazePose's 33 landmarks -> COCO-17 order (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
BLAZEPOSE_TO_COCO = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])

# Indices of shoulders and hips in COCO-17.
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 5, 6, 11, 12


@dataclass
class Crop:
    """A square region of the frame: centre (cx, cy), side length in pixels, and rotation in degrees.

    ``angle`` rotates the crop content: with 90, a person lying along the frame's x axis stands upright in the
    model's input.
    """

    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def matrix(self, out_size: int) -> np.ndarray:
        """2x3 affine mapping model-input pixels (u, v) to frame pixels (x, y)."""
        s = self.size / out_size
        a = np.deg2rad(self.angle)
        c, n = np.cos(a) * s, np.sin(a) * s
        h = out_size / 2.0
        # frame = centre + R(angle) @ ((u, v) - h) * s
        return np.array([[c, -n, self.cx - c * h + n * h], [n, c, self.cy - n * h - c * h]], dtype=np.float64)

    def box(self) -> tuple[float, float, float, float]:
        h = self.size / 2.0
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


def crop_around_box(box: tuple[float, float, float, float], margin: float = 1.25, angle: float = 0.0) -> Crop:
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * margin
    return Crop((x0 + x1) / 2.0, (y0 + y1) / 2.0, max(side, 16.0), angle)


def whole_frame_crop(width: int, height: int) -> Crop:
    """The letterboxed whole frame: a square as large as the frame's long side, padded."""
    return Crop(width / 2.0, height / 2.0, float(max(width, height)))


def torso_score(kps: np.ndarray) -> float:
    """How confidently a torso is there: the weaker of (best shoulder, best hip)."""
    s = kps[:, 2]
    return float(min(max(s[L_SHOULDER], s[R_SHOULDER]), max(s[L_HIP], s[R_HIP])))


@dataclass
class Estimate:
    """What an estimator found in one crop: everything the tracker needs, whichever model ran."""

    kps: np.ndarray  # (17, 3) x, y in frame pixels and a 0..1 score, COCO-17 order
    crop: Crop  # the crop it looked in (with the angle that was used)
    kps33: Optional[np.ndarray] = None  # BlazePose: its 33 landmarks (x, y, score) in frame pixels
    roi: Optional[Crop] = None  # BlazePose: the next frame's region of interest its landmarks give (rotated)
    world: Optional[np.ndarray] = None  # BlazePose: its 33 world landmarks (x, y, z) in metres (pose/world3d.py)
    dark: bool = False  # night enhancement had to stretch this crop (a dark one)

    @property
    def scores(self) -> np.ndarray:
        return self.kps[:, 2]


class Estimator(ABC):
    """A single-person keypoint model: a crop of the frame in, an :class:`Estimate` out."""

    keypoint_count: int  # keypoints the model itself outputs (before mapping to COCO-17)

    def __init__(self, model: Model):
        self.model = model
        self.enhancer: Optional[Enhancer] = None  # night enhancement of the crop (pose.enhance); the engine sets it

    @abstractmethod
    def estimate(self, frame: np.ndarray, crop: Crop) -> Estimate:
        """The person in ``crop`` of the HxWx3 uint8 RGB ``frame``."""

    def _enhance(self, model_input: np.ndarray) -> bool:
        """Night enhancement of the model input in place; True when the crop was dark enough to need it."""
        return self.enhancer is not None and self.enhancer.apply(model_input)


class MoveNetEstimator(Estimator):
    """MoveNet SinglePose (int8, uint8 input 0..255, output (y, x, score) normalised to the input)."""

    keypoint_count = 17

    def __init__(self, model: Model):
        super().__init__(model)
        _, h, w, _ = model.input_shape
        self.size = int(w)
        self._input = np.zeros((1, h, w, 3), dtype=model.input_dtype)
        self._uv1 = np.ones((17, 3), dtype=np.float64)

    def estimate(self, frame: np.ndarray, crop: Crop) -> Estimate:
        m = crop.matrix(self.size)
        cv2.warpAffine(
            frame,
            m,
            (self.size, self.size),
            dst=self._input[0],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        dark = self._enhance(self._input[0])
        out = self.model.run(self._input)[0].reshape(17, 3)
        uv1 = self._uv1
        uv1[:, 0] = out[:, 1] * self.size
        uv1[:, 1] = out[:, 0] * self.size
        kps = np.empty((17, 3), dtype=np.float32)
        kps[:, :2] = uv1 @ m.T
        kps[:, 2] = out[:, 2]
        return Estimate(kps, crop, dark=dark)


class BlazePoseEstimator(Estimator):
    """BlazePose GHUM full landmark model (fp32 input 0..1, 39 landmarks in input pixels; 33 are the body, 33 and
    34 are the alignment points that give the next frame's region of interest, as MediaPipe tracks it; and the same
    39 points in 3D, metres from the hips' centre, its output ``Identity_4``)."""

    keypoint_count = 33

    def __init__(self, model: Model):
        super().__init__(model)
        _, h, w, _ = model.input_shape
        self.size = int(w)
        self._rgb = np.zeros((h, w, 3), dtype=np.uint8)
        self._input = np.zeros((1, h, w, 3), dtype=np.float32)
        self._uv1 = np.ones((35, 3), dtype=np.float64)
        self._which = [
            model.output_where(lambda s: s[-1] == 195),
            model.output_where(lambda s: s == (1, 1)),
            model.output_where(lambda s: s[-1] == WORLD_OUTPUT_SIZE),
        ]

    def estimate(self, frame: np.ndarray, crop: Crop) -> Estimate:
        m = crop.matrix(self.size)
        cv2.warpAffine(
            frame,
            m,
            (self.size, self.size),
            dst=self._rgb,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        dark = self._enhance(self._rgb)
        np.multiply(self._rgb, 1.0 / 255.0, out=self._input[0], casting="unsafe")
        landmarks, flag, world = self.model.run(self._input, self._which)
        landmarks = landmarks.reshape(39, 5)
        presence = min(max(float(flag.reshape(-1)[0]), 0.0), 1.0)  # the pose flag is a probability already
        uv1 = self._uv1
        uv1[:, 0] = landmarks[:35, 0]
        uv1[:, 1] = landmarks[:35, 1]
        xy = uv1 @ m.T
        kps33 = np.empty((33, 3), dtype=np.float32)
        kps33[:, :2] = xy[:33]
        # visibility is a logit; the pose flag scales it so an empty crop has no confident keypoints.
        kps33[:, 2] = presence / (1.0 + np.exp(-np.clip(landmarks[:33, 3], -80, 80)))
        roi = alignment_crop(xy[33], xy[34]) if presence >= 0.5 else None
        return Estimate(
            kps33[BLAZEPOSE_TO_COCO].copy(),
            crop,
            kps33=kps33,
            roi=roi,
            world=world_landmarks(world, crop.angle),
            dark=dark,
        )


def alignment_crop(centre: np.ndarray, top: np.ndarray, scale: float = 1.25) -> Crop:
    """BlazePose's region of interest from two alignment points (hip centre, a point above the head): centred on
    the first, twice their distance (times ``scale``) wide, turned so the body points up in the crop."""
    ux, uy = float(top[0] - centre[0]), float(top[1] - centre[1])
    side = max(2.0 * float(np.hypot(ux, uy)) * scale, 16.0)
    return Crop(float(centre[0]), float(centre[1]), side, float(np.degrees(np.arctan2(ux, -uy))))


# Model registry kind (pose/models.py ModelSpec.kind) -> the adapter that runs it.
ESTIMATORS: dict[str, type[Estimator]] = {
    "estimator": MoveNetEstimator,
    "blazepose_landmark": BlazePoseEstimator,
}
