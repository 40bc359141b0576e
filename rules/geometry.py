"""Body geometry from one frame's COCO-17 keypoints: spine vector and angle, hip height, body size.

Image coordinates: x to the right, y DOWN (pixels). Every function takes a (17, 3) array of
x, y, score and a minimum score; keypoints below it count as missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

NOSE = 0
L_SHOULDER, R_SHOULDER = 5, 6
L_HIP, R_HIP = 11, 12
L_KNEE, R_KNEE = 13, 14
L_ANKLE, R_ANKLE = 15, 16

# Body height from what is visible. Standing adults (Drillis & Contini, fractions of height H) have the hip joint
# 0.49 H above the ankle joint, which is what LEG_FRACTION uses. Anatomically the shoulder-to-hip-joint torso is
# ~0.29 H, but MoveNet/AlphaPose torsos seen from a raised camera measured 1.03-1.9x (median 1.28x) that against
# the leg-based height on the shared clips, so TORSO_FRACTION is the measured 0.37: either way a person gets about
# the same size, legs in view or not.
LEG_FRACTION = 0.49  # hip joint to ankle joint, standing
TORSO_FRACTION = 0.37  # shoulder keypoints to hip keypoints, as measured
LEGS_UNDER_BODY = 1.0  # ankles at least one torso length below the hips: standing, not seated or lying


@dataclass(frozen=True)
class BodyGeometry:
    """What the rules need from one person in one frame."""

    spine_angle_deg: float  # angle of hip->shoulder from straight up: 0 upright, 90 horizontal, 180 upside down
    hip_y: float  # image y of the hip point the spine starts at (pixels, down is larger)
    shoulder_y: float
    hip_x: float
    shoulder_x: float
    height_px: float  # estimated standing body height (pixels), see body_height
    legs_px: Optional[float]  # hips' height above the ankles when the legs are under the body, else None
    torso_px: float  # shoulder-to-hip length in the image (shorter than standing when the torso lies along the
    # camera's line of sight)
    feet_px: Optional[float]  # distance from the hip point to the confident ankles (mean), None without ankles
    knees: bool  # a knee is confidently seen
    box_w: float  # width of the confident keypoints' bounding box
    box_h: float  # height of the same
    score: float  # mean score of the torso keypoints used


def _ok(kps: np.ndarray, i: int, min_score: float) -> bool:
    return bool(kps[i, 2] >= min_score)


def spine_points(kps: np.ndarray, min_score: float) -> Optional[tuple[np.ndarray, np.ndarray, float]]:
    """Return (shoulder point, hip point, mean score) of the spine, or None without a confident torso.

    Mid-shoulder -> mid-hip when all four are confident; otherwise one side's shoulder -> hip (as Ambianic
    does), picking the more confident side."""
    ls, rs, lh, rh = (_ok(kps, i, min_score) for i in (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP))
    if ls and rs and lh and rh:
        top = (kps[L_SHOULDER, :2] + kps[R_SHOULDER, :2]) / 2.0
        bottom = (kps[L_HIP, :2] + kps[R_HIP, :2]) / 2.0
        score = float(np.mean(kps[[L_SHOULDER, R_SHOULDER, L_HIP, R_HIP], 2]))
        return top, bottom, score
    sides = []
    if ls and lh:
        sides.append((float(kps[L_SHOULDER, 2] + kps[L_HIP, 2]) / 2.0, L_SHOULDER, L_HIP))
    if rs and rh:
        sides.append((float(kps[R_SHOULDER, 2] + kps[R_HIP, 2]) / 2.0, R_SHOULDER, R_HIP))
    if not sides:
        return None
    score, s, h = max(sides)
    return kps[s, :2].astype(float), kps[h, :2].astype(float), score


def angle_from_vertical(top: np.ndarray, bottom: np.ndarray) -> float:
    """Angle (degrees, 0..180) between the bottom->top vector and straight up in the image."""
    dx = float(top[0] - bottom[0])
    dy = float(bottom[1] - top[1])  # positive when top is above bottom (image y grows downward)
    if dx == 0.0 and dy == 0.0:
        return 0.0
    return math.degrees(math.atan2(abs(dx), dy))


def legs_under_body(kps: np.ndarray, top: np.ndarray, bottom: np.ndarray, min_score: float) -> Optional[float]:
    """The hips' height above the confident ankles (pixels) when the legs stand under the body, else None."""
    torso = float(np.hypot(*(top - bottom)))
    ankles = [kps[i, 1] for i in (L_ANKLE, R_ANKLE) if kps[i, 2] >= min_score]
    if ankles and torso > 0:
        leg = float(np.mean(ankles)) - float(bottom[1])
        if leg >= LEGS_UNDER_BODY * torso:
            return leg
    return None


def feet_distance(kps: np.ndarray, bottom: np.ndarray, min_score: float) -> Optional[float]:
    """Mean image distance from the hip point to the confident ankles, or None when no ankle is confident."""
    ankles = [kps[i, :2] for i in (L_ANKLE, R_ANKLE) if kps[i, 2] >= min_score]
    if not ankles:
        return None
    return float(np.mean([np.hypot(*(a - bottom)) for a in ankles]))


def body_height(kps: np.ndarray, top: np.ndarray, bottom: np.ndarray, min_score: float) -> float:
    """Standing body height estimate (pixels).

    With the legs under the body (ankles confident and well below the hips) it is the hips' height above
    the ankles divided by LEG_FRACTION: that vertical image distance is foreshortened by the camera's tilt
    exactly as a hip drop towards the floor is, so drops measured in these units mean the same from a
    ceiling-high camera and a shelf-high one. Otherwise (seated, lying, ankles out of view) the torso length
    stands in."""
    leg = legs_under_body(kps, top, bottom, min_score)
    if leg is not None:
        return leg / LEG_FRACTION
    return float(np.hypot(*(top - bottom))) / TORSO_FRACTION


def finite_keypoints(kps: np.ndarray) -> np.ndarray:
    """A float copy where a keypoint with a non-finite x, y or score counts as missing (score 0): one NaN
    joint (a recording's null, a model glitch) must not take the whole pose with it."""
    kps = np.array(kps, dtype=float)
    if kps.ndim == 2 and kps.shape[1] == 3:
        bad = ~np.isfinite(kps).all(axis=1)
        kps[bad] = 0.0
    return kps


def measure(kps: np.ndarray, min_score: float) -> Optional[BodyGeometry]:
    """Geometry of one pose, or None when no confident shoulder->hip line exists."""
    kps = finite_keypoints(kps)
    if kps.shape != (17, 3):
        return None
    spine = spine_points(kps, min_score)
    if spine is None:
        return None
    top, bottom, score = spine
    confident = kps[kps[:, 2] >= min_score]
    box_w = float(confident[:, 0].max() - confident[:, 0].min())
    box_h = float(confident[:, 1].max() - confident[:, 1].min())
    return BodyGeometry(
        spine_angle_deg=angle_from_vertical(top, bottom),
        hip_y=float(bottom[1]),
        shoulder_y=float(top[1]),
        hip_x=float(bottom[0]),
        shoulder_x=float(top[0]),
        height_px=body_height(kps, top, bottom, min_score),
        legs_px=legs_under_body(kps, top, bottom, min_score),
        torso_px=float(np.hypot(*(top - bottom))),
        feet_px=feet_distance(kps, bottom, min_score),
        knees=bool(_ok(kps, L_KNEE, min_score) or _ok(kps, R_KNEE, min_score)),
        box_w=box_w,
        box_h=box_h,
        score=score,
    )
