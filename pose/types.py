"""Values that leave the pose engine: plain dataclasses and numpy, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# COCO-17 keypoint order, as MoveNet outputs it and as the rules and recordings use it.
KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Bones drawn on the debug stream and snapshots (pairs of indices into KEYPOINT_NAMES).
SKELETON = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
)


@dataclass
class Person:
    """One tracked person in one frame.

    ``keypoints`` is a float32 array of shape (17, 3): x, y in frame pixels and a 0..1 score, in
    ``KEYPOINT_NAMES`` order, after smoothing. ``keypoints_raw`` is the same before smoothing.
    ``keypoints33`` holds BlazePose's 33 landmarks (x, y, score) when that estimator is used.
    """

    track_id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    keypoints: np.ndarray
    keypoints_raw: Optional[np.ndarray] = None
    keypoints33: Optional[np.ndarray] = None
    detected: bool = False  # True when the detector confirmed this person in this frame


@dataclass
class PoseResult:
    """What the engine returns for one frame."""

    persons: list[Person] = field(default_factory=list)
    backend: str = "cpu"  # "cpu" or "edgetpu": the backend that ran this frame
    stage_ms: dict[str, float] = field(default_factory=dict)  # e.g. {"detect": 4.1, "estimate": 3.2}
    detector_ran: bool = False
    estimator_calls: int = 0  # estimator invokes this frame (one per person, more with rotation retries)
