"""Crop geometry: square crops with padding at the borders and ±90° rotation map back to frame pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fallwatch.pose.detector import Detection, nms
from fallwatch.pose.estimator import Crop, crop_around_box, whole_frame_crop


def _warp(frame: np.ndarray, crop: Crop, size: int = 192) -> np.ndarray:
    return cv2.warpAffine(
        frame,
        crop.matrix(size),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )


@pytest.mark.parametrize("angle", [0.0, 90.0, -90.0])
def test_point_maps_back_to_frame(angle: float) -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    cv2.circle(frame, (500, 100), 4, (255, 255, 255), -1)  # a dot near the top-right corner
    crop = Crop(560.0, 80.0, 240.0, angle)  # reaches past the top and right borders
    out = _warp(frame, crop)
    v, u = np.argwhere(out[:, :, 0] > 128).mean(axis=0)
    x, y = crop.matrix(192) @ np.array([u, v, 1.0])
    assert abs(x - 500) < 2 and abs(y - 100) < 2
    # beyond the frame the crop is padded with black
    assert out[:, :, 0].sum() > 0 and (out == 0).mean() > 0.9


def test_rotation_turns_a_lying_bar_upright() -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    cv2.rectangle(frame, (200, 230), (440, 250), (255, 255, 255), -1)  # horizontal bar
    for angle in (90.0, -90.0):
        out = _warp(frame, Crop(320, 240, 300, angle))
        ys, xs = np.nonzero(out[:, :, 0] > 128)
        assert np.ptp(ys) > 4 * np.ptp(xs)  # now vertical


def test_crop_around_box_is_square_with_margin() -> None:
    c = crop_around_box((100, 50, 200, 350))
    assert (c.cx, c.cy) == (150, 200) and c.size == pytest.approx(300 * 1.25)
    w = whole_frame_crop(640, 480)
    assert w.size == 640 and (w.cx, w.cy) == (320, 240)


def test_nms_drops_overlaps_and_boxes_inside_boxes() -> None:
    dets = [
        Detection((0, 0, 100, 200), 0.9),
        Detection((5, 5, 105, 195), 0.6),
        Detection((20, 20, 80, 100), 0.7),
        Detection((300, 0, 400, 200), 0.55),
    ]
    kept = nms(dets)
    assert [d.score for d in kept] == [0.9, 0.55]
