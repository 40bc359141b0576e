"""Person detectors: SSD MobileNet COCO (int8, TFLite detection post-process) and MoveNet MultiPose.

Each adapter is prepare input -> invoke -> decode, returning :class:`Detection` boxes in frame pixels. The SSD's
built-in suppression is per class only and lets overlapping person boxes through, so we suppress them ourselves.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .runtime import Model

log = logging.getLogger(__name__)


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    keypoints: Optional[np.ndarray] = None  # (17, 3) x, y, score in frame pixels, when the detector has them


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(dets: list[Detection], iou_threshold: float = 0.5) -> list[Detection]:
    """Greedy non-maximum suppression; also drops a box mostly inside a stronger one (a torso inside a body)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: d.score, reverse=True):
        if all(iou(d.box, k.box) < iou_threshold and containment(d.box, k.box) < 0.85 for k in kept):
            kept.append(d)
    return kept


def containment(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The fraction of box a that lies inside box b."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if ix > 0 and iy > 0 and area > 0 else 0.0


class SsdDetector:
    """SSD MobileNet v1/v2 COCO with the TFLite detection post-process: boxes, classes, scores, count."""

    PERSON = 0

    def __init__(self, model: Model, threshold: float = 0.5, iou_threshold: float = 0.5):
        self.model = model
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        _, h, w, _ = model.input_shape
        self.size = (int(w), int(h))
        self._input = np.zeros((1, h, w, 3), dtype=model.input_dtype)
        if len(model.outputs) != 4:
            raise ValueError(f"{model.path.name} is not an SSD detection post-process model (4 outputs expected)")

    def detect(self, frame: np.ndarray) -> list[Detection]:
        fh, fw = frame.shape[:2]
        # The model was trained on images stretched to its input size, not letterboxed.
        cv2.resize(frame, self.size, dst=self._input[0], interpolation=cv2.INTER_LINEAR)
        boxes, classes, scores, count = self.model.run(self._input)
        n = int(count.reshape(-1)[0])
        dets = []
        for i in range(min(n, scores.shape[-1])):
            s = float(scores[0, i])
            if int(classes[0, i]) != self.PERSON or s < self.threshold:
                continue
            y0, x0, y1, x1 = (float(v) for v in np.clip(boxes[0, i], 0.0, 1.0))
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                continue
            dets.append(Detection((x0 * fw, y0 * fh, x1 * fw, y1 * fh), s))
        return nms(dets, self.iou_threshold)


class MultiPoseDetector:
    """MoveNet MultiPose Lightning: up to 6 people with boxes and keypoints, on a letterboxed square input."""

    def __init__(self, model: Model, threshold: float = 0.3, input_size: int = 256, iou_threshold: float = 0.5):
        self.model = model
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        self.size = input_size  # a multiple of 32
        model.resize_input((1, input_size, input_size, 3))
        self._input = np.zeros((1, input_size, input_size, 3), dtype=np.uint8)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        fh, fw = frame.shape[:2]
        side = float(max(fw, fh))
        scale = self.size / side
        # letterbox: frame scaled to fit, centred, zero padding
        m = np.array([[scale, 0, (self.size - fw * scale) / 2], [0, scale, (self.size - fh * scale) / 2]])
        cv2.warpAffine(frame, m, (self.size, self.size), dst=self._input[0], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT)
        out = self.model.run(self._input)[0].reshape(-1, 56)
        ox, oy = m[0, 2], m[1, 2]
        dets = []
        for row in out:
            s = float(row[55])
            if s < self.threshold:
                continue
            kps = row[:51].reshape(17, 3)
            k = np.empty((17, 3), dtype=np.float32)
            k[:, 0] = (kps[:, 1] * self.size - ox) / scale
            k[:, 1] = (kps[:, 0] * self.size - oy) / scale
            k[:, 2] = kps[:, 2]
            y0, x0, y1, x1 = row[51:55]
            box = ((x0 * self.size - ox) / scale, (y0 * self.size - oy) / scale,
                   (x1 * self.size - ox) / scale, (y1 * self.size - oy) / scale)
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(fw), box[2]), min(float(fh), box[3]))
            if box[2] > box[0] and box[3] > box[1]:
                dets.append(Detection(tuple(float(v) for v in box), s, k))
        return nms(dets, self.iou_threshold)
