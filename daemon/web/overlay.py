"""Drawing for the debug stream and MQTT snapshots: boxes, track ids, skeletons, the spine vector and its angle,
each person's state in colour. Pure functions over numpy frames; cv2 does the drawing and the JPEG encoding."""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import cv2
import numpy as np
from fallwatch.pose.types import KEYPOINT_NAMES, SKELETON
from fallwatch.rules.geometry import angle_from_vertical, finite_keypoints, spine_points

log = logging.getLogger(__name__)

# BGR colours per state: upright green, falling orange, down red; anything else grey.
STATE_COLOURS = {
    "upright": (60, 200, 60),
    "falling": (0, 150, 255),
    "down": (40, 40, 230),
}
UNKNOWN_COLOUR = (180, 180, 180)
KEYPOINT_MIN_SCORE = 0.2  # below this a keypoint is a guess; drawing it would mislead more than help

_L_SHOULDER, _R_SHOULDER = KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_shoulder")
_L_HIP, _R_HIP = KEYPOINT_NAMES.index("left_hip"), KEYPOINT_NAMES.index("right_hip")
MAX_HEIGHT = 4320


def spine(
    keypoints: np.ndarray, min_score: float = KEYPOINT_MIN_SCORE
) -> Optional[tuple[tuple[float, float], tuple[float, float], float]]:
    """(shoulder point, hip point, angle from vertical in degrees) of the spine the rules judge, or None.

    Mid-shoulder -> mid-hip, or one side's shoulder -> hip when the other side is not seen (the rules'
    own ``spine_points``, so the stream shows what they measure). 0 deg is upright, 90 lying flat, up to 180
    head down.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[0] < 17 or kp.shape[1] < 3:
        return None
    points = spine_points(finite_keypoints(kp[:17, :3]), min_score)
    if points is None or np.array_equal(points[0], points[1]):
        return None
    top, bottom, _ = points
    return (float(top[0]), float(top[1])), (float(bottom[0]), float(bottom[1])), angle_from_vertical(top, bottom)


_COORD_LIMIT = 1 << 20  # cv2 takes int32 points; far-off ones are clipped to the image by cv2 itself


def _pt(x: float, y: float) -> tuple[int, int]:
    """Pixel point for cv2; callers pass finite values only (NaN has no place to be drawn)."""
    return (
        int(round(min(max(float(x), -_COORD_LIMIT), _COORD_LIMIT))),
        int(round(min(max(float(y), -_COORD_LIMIT), _COORD_LIMIT))),
    )


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    """Text on a dark backing so it reads on any background."""
    thick = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = min(max(0, org[0]), max(0, img.shape[1] - w - 2))
    y = min(max(h + 2, org[1]), img.shape[0] - base - 1)
    cv2.rectangle(img, (x, y - h - 2), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def draw_overlay(
    frame_rgb: np.ndarray, persons: list, states: dict[int, str], extra: Optional[dict] = None
) -> np.ndarray:
    """A BGR copy of ``frame_rgb`` with every person's box, id, skeleton, spine vector, angle and state drawn.

    ``extra`` may carry per-track figures, e.g. ``{track_id: {"spine_angle_deg": 42.0}}``; the angle shown is
    that one when given (the rules' own figure), else computed here from the keypoints.
    """
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"draw_overlay: expected an HxWx3 uint8 RGB frame, got shape {frame.shape} {frame.dtype}")
    img = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)  # a copy: the pipeline's frame is never touched
    extra = extra or {}
    h, w = img.shape[:2]
    scale = max(0.4, min(h, w) / 720.0)  # text and lines grow with the frame
    line = max(1, int(round(2 * scale)))
    for person in persons:
        tid = int(person.track_id)
        state = states.get(tid, "")
        colour = STATE_COLOURS.get(state, UNKNOWN_COLOUR)
        x0, y0, x1, y1 = (float(v) for v in person.box)
        box_ok = all(math.isfinite(v) for v in (x0, y0, x1, y1))  # a bad box must not cost the whole frame
        if box_ok:
            cv2.rectangle(img, _pt(x0, y0), _pt(x1, y1), colour, line)

        kp = np.asarray(person.keypoints, dtype=np.float32)
        if kp.ndim == 2 and kp.shape[0] >= 17 and kp.shape[1] >= 3:
            ok = np.isfinite(kp[:, :3]).all(axis=1) & (kp[:, 2] >= KEYPOINT_MIN_SCORE)
            for a, b in SKELETON:
                if ok[a] and ok[b]:
                    cv2.line(img, _pt(kp[a, 0], kp[a, 1]), _pt(kp[b, 0], kp[b, 1]), (255, 255, 0), line, cv2.LINE_AA)
            for i in np.flatnonzero(ok[:17]):
                cv2.circle(img, _pt(kp[i, 0], kp[i, 1]), line + 2, (0, 255, 255), -1, cv2.LINE_AA)

        sp = spine(kp)
        info = extra.get(tid) or extra.get(str(tid)) or {}
        angle = info.get("spine_angle_deg") if isinstance(info, dict) else None
        if sp is not None:
            sh, hip, own_angle = sp
            angle = own_angle if angle is None else angle
            cv2.arrowedLine(img, _pt(*hip), _pt(*sh), colour, line + 1, cv2.LINE_AA, tipLength=0.15)
        text = f"#{tid} {state or '?'}"
        if angle is not None:
            text += f" {float(angle):.0f}deg"
        at = _pt(x0, y0 - 4) if box_ok else (_pt(*sp[0]) if sp is not None else (4, 20))
        _label(img, text, at, colour, max(0.5, 0.8 * scale))
    # night enhancement: say that the models saw a stretched picture, and what was measured on it
    badge = enhance_badge(extra.get("enhance"))
    if badge:
        _label(img, badge, (4, 4), (120, 220, 255), max(0.45, 0.6 * scale))
    # frame number and media time, so a moment seen on the stream can be found again in a recording
    meta = []
    if isinstance(extra.get("frame"), (int, np.integer)):
        meta.append(f"frame {int(extra['frame'])}")
    if isinstance(extra.get("t"), (int, float, np.floating)):
        meta.append(f"t {float(extra['t']):.2f}s")
    if meta:
        _label(img, "  ".join(meta), (4, h - 6), (230, 230, 230), max(0.45, 0.6 * scale))
    return img


def enhance_badge(figures: Any) -> str:
    """ "night enhancement on (luma 38, contrast 12)" while the models' input is being enhanced, else ""."""
    if not isinstance(figures, dict) or not figures.get("on"):
        return ""
    luma, contrast = figures.get("luma"), figures.get("contrast")
    if isinstance(luma, (int, float)) and isinstance(contrast, (int, float)):
        return f"night enhancement on (luma {luma:.0f}, contrast {contrast:.0f})"
    return "night enhancement on"


def encode_jpeg(bgr: np.ndarray, height: Optional[int] = None, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image, scaled to ``height`` pixels (aspect kept) when given."""
    img = np.asarray(bgr)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"encode_jpeg: expected a non-empty image, got shape {img.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"encode_jpeg: quality must be 1..100, got {quality}")
    if height is not None:
        height = int(height)
        if not 16 <= height <= MAX_HEIGHT:
            raise ValueError(f"encode_jpeg: height must be 16..{MAX_HEIGHT}, got {height}")
        if height != img.shape[0]:
            width = max(1, int(round(img.shape[1] * height / img.shape[0])))
            interp = cv2.INTER_AREA if height < img.shape[0] else cv2.INTER_LINEAR
            img = cv2.resize(img, (width, height), interpolation=interp)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("encode_jpeg: cv2.imencode failed")
    return buf.tobytes()


def placeholder_bgr(text: str, width: int = 640, height: int = 480) -> np.ndarray:
    """A dark card with a message, shown on the stream before the first frame arrives."""
    img = np.full((height, width, 3), 32, np.uint8)
    scale = max(0.5, height / 600)
    thick = max(1, int(round(scale * 2)))
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.putText(
        img,
        text,
        ((width - w) // 2, (height + h) // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (200, 200, 200),
        thick,
        cv2.LINE_AA,
    )
    return img
