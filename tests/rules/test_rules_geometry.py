"""Spine vector, its angle from vertical, and body height from COCO-17 keypoints."""

from __future__ import annotations

import numpy as np
import pytest
from fallwatch.rules.geometry import LEG_FRACTION, TORSO_FRACTION, angle_from_vertical, measure, spine_points


def pose(shoulders, hips, ankles=None, score=0.9) -> np.ndarray:
    kp = np.zeros((17, 3))
    for i, p in zip((5, 6), shoulders, strict=True):
        kp[i] = (*p, score)
    for i, p in zip((11, 12), hips, strict=True):
        kp[i] = (*p, score)
    if ankles:
        for i, p in zip((15, 16), ankles, strict=True):
            kp[i] = (*p, score)
    return kp


@pytest.mark.parametrize(
    "top, bottom, angle",
    [
        ((0, 0), (0, 10), 0.0),  # upright
        ((10, 10), (0, 10), 90.0),  # horizontal, head to the right
        ((-10, 10), (0, 10), 90.0),  # horizontal, head to the left
        ((0, 20), (0, 10), 180.0),  # upside down
        ((10, 0), (0, 10), 45.0),
    ],
)
def test_angle_from_vertical(top, bottom, angle) -> None:
    assert angle_from_vertical(np.array(top, float), np.array(bottom, float)) == pytest.approx(angle)


def test_mid_shoulder_to_mid_hip_when_all_four_are_confident() -> None:
    g = measure(pose([(90, 100), (110, 100)], [(95, 200), (105, 200)], [(95, 460), (105, 460)]), 0.2)
    assert g.spine_angle_deg == pytest.approx(0.0)
    assert (g.shoulder_y, g.hip_y) == (100, 200)
    assert g.height_px == pytest.approx(260 / LEG_FRACTION)  # hips 260 px above the ankles


def test_one_side_when_the_other_is_not_confident() -> None:
    kp = pose([(100, 100), (300, 300)], [(100, 200), (300, 100)])
    kp[6, 2] = 0.1  # right shoulder weak: the left shoulder->hip line is the spine
    top, bottom, _ = spine_points(kp, 0.2)
    assert tuple(top) == (100, 100) and tuple(bottom) == (100, 200)
    kp[5, 2] = 0.1
    assert spine_points(kp, 0.2) is None and measure(kp, 0.2) is None


def test_torso_stands_in_when_the_legs_are_not_under_the_body() -> None:
    lying = pose([(100, 300), (100, 310)], [(200, 300), (200, 310)], [(400, 305), (400, 310)])
    g = measure(lying, 0.2)
    assert g.spine_angle_deg == pytest.approx(90.0)
    assert g.height_px == pytest.approx(100 / TORSO_FRACTION)


def test_bad_arrays_are_none() -> None:
    assert measure(np.zeros((5, 3)), 0.2) is None
    assert measure(np.full((17, 3), np.nan), 0.2) is None
