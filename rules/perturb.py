"""Pose recordings as another CPU (or another camera's noise) might have given them: seeded perturbations.

The size is measured, not guessed: the same 11 GMDCSA24 clips recorded on an x86 machine with AVX2 and on an
emulated Raspberry Pi 4 (../shared/data/gmdcsa24-dev-x86-avx2 and -arm64, default pipeline) differ per keypoint
by a median of 0.011 body heights (3 px), with a heavy tail: 6 % of keypoints more than 0.1 body heights apart and
in 6 % of frames at least half of them (the estimator settled on another pose). The small differences persist
from one frame to the next (lag-1 correlation 0.6: the keypoint smoother carries them). So a perturbation is
- keypoint noise: per coordinate, KEYPOINT_SIGMA body heights, correlated frame to frame (AR(1), CORRELATION);
- another estimate: in OTHER_POSE_SHARE of frames every keypoint moves a further OTHER_POSE_SIGMA body heights;
- scores moved by SCORE_SIGMA, so keypoints near min_keypoint_score come and go as they do between CPUs;
- dropped frames: DROP_SHARE of frames never reach the rules (a frame lost, a slow pipeline);
- timing jitter: timestamps moved by up to JITTER_S (a camera's or decoder's clock), order kept.
"Body heights" here are the person's keypoint box height, so the noise scales with the person's size in the image.
Every run is seeded (the clip's name and the run number), so a perturbation study gives the same figures each time.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any, Iterable

import numpy as np

from .base import PersonPose

KEYPOINT_SIGMA = 0.017  # body heights per coordinate: the measured rms of the CPU-to-CPU differences under 0.1
CORRELATION = 0.6  # lag-1 correlation of those differences, frame to frame
OTHER_POSE_SHARE = 0.06  # frames in which the two CPUs' estimator settled on visibly different poses
OTHER_POSE_SIGMA = 0.08  # body heights per coordinate in those frames
SCORE_SIGMA = 0.03  # keypoint score noise
DROP_SHARE = 0.03  # frames lost
JITTER_S = 0.01  # timestamps moved by up to this, never out of order


def seed_for(name: str, run: int) -> int:
    """A stable seed per clip and run (not Python's hash(), which changes between processes)."""
    return zlib.crc32(f"{name}#{run}".encode())


def _body_height(kps: np.ndarray) -> float:
    seen = kps[kps[:, 2] > 0]
    if len(seen) < 2:
        return 0.0
    return float(seen[:, 1].max() - seen[:, 1].min())


def perturb(frames: Iterable[Any], seed: int) -> list[Any]:
    """``frames`` (RecordedFrame-like: t, frame, size, people) with one seeded perturbation applied."""
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    noise: dict[int, np.ndarray] = {}  # per track: the correlated part of the noise, in body heights
    last_t = float("-inf")
    innovation = KEYPOINT_SIGMA * np.sqrt(1.0 - CORRELATION**2)
    for fr in frames:
        t = float(fr.t) + float(rng.uniform(-JITTER_S, JITTER_S))
        t = max(t, last_t + 1e-4) if out else t
        dropped = rng.random() < DROP_SHARE
        people = []
        for p in fr.people:
            kps = np.array(p.keypoints, dtype=float)
            prev = noise.get(p.track)
            if prev is None:
                n = rng.normal(0.0, KEYPOINT_SIGMA, size=(17, 2))
            else:
                n = CORRELATION * prev + rng.normal(0.0, innovation, size=(17, 2))
            noise[p.track] = n
            extra = rng.normal(0.0, OTHER_POSE_SIGMA, size=(17, 2)) if rng.random() < OTHER_POSE_SHARE else 0.0
            height = _body_height(kps)
            kps[:, :2] += (n + extra) * height
            kps[:, 2] = np.clip(kps[:, 2] + rng.normal(0.0, SCORE_SIGMA, size=17), 0.0, 1.0)
            people.append(PersonPose(track=p.track, box=p.box, keypoints=kps.astype(np.float32)))
        if dropped:
            continue  # the frame is lost: the rules never see it
        last_t = t
        out.append(replace(fr, t=t, people=people))
    return out
