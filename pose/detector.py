"""Person detectors: SSD MobileNet COCO (int8, TFLite detection post-process), MoveNet MultiPose and BlazePose's.

Each adapter is a :class:`Detector` (prepare input -> invoke -> decode), returning :class:`Detection` boxes in frame
pixels; ``DETECTORS`` maps a model's registry kind (pose/models.py) to its adapter. The SSD's built-in suppression
is per class only and lets overlapping person boxes through, so we suppress them ourselves.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from .enhance import Enhancer
from .runtime import Model

log = logging.getLogger(__name__)


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    keypoints: Optional[np.ndarray] = None  # (17, 3) x, y, score in frame pixels, when the detector has them
    crop: Optional[Any] = None  # a rotated region of interest (estimator.Crop), when the detector gives one


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


class Detector(ABC):
    """A person detector on the whole frame: a frame in, person boxes (and what else the model gives) out."""

    def __init__(self, model: Model, threshold: float):
        self.model = model
        self.threshold = threshold  # minimum person score
        self.enhancer: Optional[Enhancer] = None  # night enhancement of the input (pose.enhance); the engine sets it

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """People in the HxWx3 uint8 RGB ``frame``, after non-maximum suppression."""


class SsdDetector(Detector):
    """SSD MobileNet v1/v2 COCO with the TFLite detection post-process: boxes, classes, scores, count."""

    PERSON = 0

    def __init__(self, model: Model, threshold: float = 0.5, iou_threshold: float = 0.5):
        super().__init__(model, threshold)
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
        if self.enhancer is not None:
            self.enhancer.apply(self._input[0], remember=False)
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


class MultiPoseDetector(Detector):
    """MoveNet MultiPose Lightning: up to 6 people with boxes and keypoints, on a letterboxed square input."""

    MAX_THRESHOLD = 0.3  # MultiPose scores people lower than the SSD does; 0.3 is where its demos draw the line

    def __init__(self, model: Model, threshold: float = 0.3, input_size: int = 256, iou_threshold: float = 0.5):
        super().__init__(model, min(threshold, self.MAX_THRESHOLD))
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
        cv2.warpAffine(
            frame, m, (self.size, self.size), dst=self._input[0], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        if self.enhancer is not None:
            self.enhancer.apply(self._input[0], remember=False)
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
            box = (
                max(0.0, float((x0 * self.size - ox) / scale)),
                max(0.0, float((y0 * self.size - oy) / scale)),
                min(float(fw), float((x1 * self.size - ox) / scale)),
                min(float(fh), float((y1 * self.size - oy) / scale)),
            )
            if box[2] > box[0] and box[3] > box[1]:
                dets.append(Detection(box, s, k))
        return nms(dets, self.iou_threshold)


def blazepose_anchors(input_size: int = 224, strides: tuple[int, ...] = (8, 16, 32, 32, 32)) -> np.ndarray:
    """MediaPipe's SSD anchor centres for the pose detector ((2254, 2) x, y normalised; fixed size 1).

    Layers of the same stride share one grid, with two anchors per layer per cell (aspect 1 + interpolated
    scale): 28²·2 + 14²·2 + 7²·6 = 2254.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = 2 * (j - i)
        n = int(np.ceil(input_size / strides[i]))
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


class BlazePoseDetector(Detector):
    """MediaPipe's pose detector: letterboxed 224² input in [-1, 1]; boxes plus the alignment keypoints that give
    BlazePose's rotated region of interest (centre on the hips, size and angle from the hips->head vector)."""

    def __init__(self, model: Model, threshold: float = 0.5, iou_threshold: float = 0.3):
        super().__init__(model, threshold)
        self.iou_threshold = iou_threshold
        _, h, w, _ = model.input_shape
        self.size = int(w)
        self.anchors = blazepose_anchors(self.size)
        self._which = [model.output_where(lambda s: s[-1] == 12), model.output_where(lambda s: s[-1] == 1)]
        boxes = int(model.outputs[self._which[0]]["shape"][1])
        if boxes != len(self.anchors):
            raise ValueError(
                f"{model.path.name}: {boxes} boxes, but the pose detector's anchors are {len(self.anchors)}"
            )
        self._rgb = np.zeros((h, w, 3), dtype=np.uint8)
        self._input = np.zeros((1, h, w, 3), dtype=np.float32)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        from .estimator import alignment_crop

        fh, fw = frame.shape[:2]
        scale = self.size / float(max(fw, fh))
        ox, oy = (self.size - fw * scale) / 2, (self.size - fh * scale) / 2
        m = np.array([[scale, 0, ox], [0, scale, oy]])
        cv2.warpAffine(
            frame, m, (self.size, self.size), dst=self._rgb, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        if self.enhancer is not None:
            self.enhancer.apply(self._rgb, remember=False)
        np.multiply(self._rgb, 2.0 / 255.0, out=self._input[0], casting="unsafe")
        self._input -= 1.0
        raw, logits = self.model.run(self._input, self._which)
        raw, logits = raw[0], logits[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        idx = np.nonzero(scores >= self.threshold)[0]
        dets = []
        for i in idx:
            a = self.anchors[i]
            r = raw[i] / self.size
            cx, cy, w, h = r[0] + a[0], r[1] + a[1], r[2], r[3]
            kp = r[4:12].reshape(4, 2) + a  # normalised in the letterboxed input
            # back to frame pixels
            face = (
                float(((cx - w / 2) * self.size - ox) / scale),
                float(((cy - h / 2) * self.size - oy) / scale),
                float(((cx + w / 2) * self.size - ox) / scale),
                float(((cy + h / 2) * self.size - oy) / scale),
            )
            kpx = (kp[:, 0] * self.size - ox) / scale
            kpy = (kp[:, 1] * self.size - oy) / scale
            # keypoint 0: hip centre; 1: a point above the head that gives the body's size and direction
            crop = alignment_crop(np.array([kpx[0], kpy[0]]), np.array([kpx[1], kpy[1]]))
            dets.append(Detection(face, float(scores[i]), crop=crop))
        # Suppress on the face boxes the model predicts, then hand on the body's region.
        kept = nms(dets, self.iou_threshold)
        for d in kept:
            assert d.crop is not None  # every detection above was made with its crop
            x0, y0, x1, y1 = d.crop.box()
            d.box = (max(0.0, x0), max(0.0, y0), min(float(fw), x1), min(float(fh), y1))
        return kept


# Model registry kind (pose/models.py ModelSpec.kind) -> the adapter that runs it.
DETECTORS: dict[str, type[Detector]] = {
    "detector": SsdDetector,
    "multipose": MultiPoseDetector,
    "blazepose_detector": BlazePoseDetector,
}
