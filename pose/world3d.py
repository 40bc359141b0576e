"""BlazePose's 3D world landmarks and the inclination of the torso and the legs they give.

The landmark model's output ``Identity_4`` (1x117) holds 39 points x (x, y, z) in metres, origin between the hips,
in the axes of the model's (possibly rotated) input crop: x right, y down, z away from the camera. MediaPipe's
``WorldLandmarkProjectionCalculator`` only rotates x and y by the crop's rotation to bring them into the frame's
axes (no scale, no shift); :func:`world_landmarks` does the same. The axes stay the camera's: "up" below is the
image's up direction carried into 3D, which is gravity only for a level camera. A camera tilted down sees a
standing torso leaning towards it by the tilt, so :func:`angle_between` against the same person's standing torso
is the measure that does not depend on the camera's height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

WORLD_OUTPUT_SIZE = 117  # 39 points x (x, y, z)

# BlazePose's own indices of the shoulders, hips and ankles (of its 33 body landmarks).
BP_L_SHOULDER, BP_R_SHOULDER, BP_L_HIP, BP_R_HIP, BP_L_ANKLE, BP_R_ANKLE = 11, 12, 23, 24, 27, 28

# The image's up direction in the camera's axes (y points down in the image).
CAMERA_UP = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True)
class Segment3D:
    """A body segment in 3D, pointing up when standing: the torso (hips' mid-point to shoulders' mid-point) or the
    legs (ankles' mid-point to hips' mid-point), in metres."""

    vector: np.ndarray  # (3,) x right, y down, z away from the camera
    confidence: float  # 0..1: the weakest of its four landmarks' scores

    @property
    def length_m(self) -> float:
        return float(np.linalg.norm(self.vector))

    @property
    def inclination_deg(self) -> float:
        """Degrees from the camera's up direction: 0 upright in front of a level camera, 90 lying."""
        return angle_between(self.vector, CAMERA_UP)


def world_landmarks(raw: np.ndarray, crop_angle_deg: float) -> np.ndarray:
    """The 33 body landmarks (33, 3) of a 1x117 world output, rotated from the crop's axes into the frame's.

    The crop's rotation turns model-input offsets into frame offsets (pose/estimator.py ``Crop.matrix``); the same
    rotation in the x-y plane carries the world points into the frame's axes, as MediaPipe does.
    """
    pts = np.asarray(raw, dtype=np.float64).reshape(-1)
    if pts.size != WORLD_OUTPUT_SIZE:
        raise ValueError(f"world landmarks: expected {WORLD_OUTPUT_SIZE} values (39 x 3), got {pts.size}")
    pts = pts.reshape(39, 3)[:33].copy()
    a = math.radians(crop_angle_deg)
    c, s = math.cos(a), math.sin(a)
    x, y = pts[:, 0].copy(), pts[:, 1].copy()
    pts[:, 0] = c * x - s * y
    pts[:, 1] = s * x + c * y
    return pts


def torso3d(world: np.ndarray, scores: np.ndarray) -> Optional[Segment3D]:
    """The torso of 33 world landmarks with their 0..1 scores (the 2D landmarks' visibility), or None when the
    shoulders and hips coincide (no torso to measure)."""
    return _segment(world, scores, (BP_L_HIP, BP_R_HIP), (BP_L_SHOULDER, BP_R_SHOULDER))


def legs3d(world: np.ndarray, scores: np.ndarray) -> Optional[Segment3D]:
    """The legs (ankles to hips) of 33 world landmarks with their scores, or None when they coincide."""
    return _segment(world, scores, (BP_L_ANKLE, BP_R_ANKLE), (BP_L_HIP, BP_R_HIP))


def _segment(world: np.ndarray, scores: np.ndarray, low: tuple[int, int], high: tuple[int, int]) -> Optional[Segment3D]:
    v = world[list(high)].mean(axis=0) - world[list(low)].mean(axis=0)
    if float(np.linalg.norm(v)) < 1e-3:
        return None
    return Segment3D(v, float(np.min(scores[[*low, *high]])))


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Degrees between two 3D vectors (0..180)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        raise ValueError("angle_between: a zero vector has no direction")
    cos = float(np.dot(a, b)) / (na * nb)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
