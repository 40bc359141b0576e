"""The One Euro filter: jitter out when still, little lag when moving fast; raw keypoints kept; off-switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fallwatch.pose.engine import PoseEngine, PoseSettings, SmoothingSettings
from fallwatch.pose.smoothing import OneEuroFilter
from pose_testlib import first_frames


def kps_at(x: float, y: float, score: float = 0.9) -> np.ndarray:
    k = np.zeros((17, 3), dtype=np.float32)
    k[:, 0], k[:, 1], k[:, 2] = x, y, score
    return k


def test_still_person_jitter_is_reduced() -> None:
    rng = np.random.default_rng(0)
    f = OneEuroFilter()  # the defaults, as the engine uses them
    raw, out = [], []
    for i in range(150):  # 5 s at 30 fps, a person 300 px tall with 3 px keypoint jitter
        k = kps_at(320 + rng.normal(0, 3), 240 + rng.normal(0, 3))
        raw.append(k[0, :2].copy())
        out.append(f(k, i / 30, 300.0)[0, :2])
    raw_sd, out_sd = np.std(raw[30:], axis=0), np.std(out[30:], axis=0)
    assert (out_sd < raw_sd / 2).all(), (raw_sd, out_sd)


def test_fast_fall_follows_with_little_lag() -> None:
    f = OneEuroFilter()  # the defaults, as the engine uses them
    y = 100.0
    for i in range(30):  # standing still
        f(kps_at(320, y), i / 30, 300.0)
    # hips drop 250 px in 0.5 s, then lie still
    lag = []
    for i in range(30, 45):
        y = 100.0 + 250.0 * (i - 29) / 15
        out = f(kps_at(320, y), i / 30, 300.0)
        lag.append(y - out[0, 1])
    assert max(lag) < 60, lag  # less than a quarter of the drop behind at worst
    for i in range(45, 60):
        out = f(kps_at(320, y), i / 30, 300.0)
    assert abs(out[0, 1] - y) < 5  # and settles within half a second


def test_scores_pass_through_and_restart_on_time_going_back() -> None:
    f = OneEuroFilter()
    f(kps_at(0, 0, 0.5), 1.0, 100.0)
    out = f(kps_at(50, 50, 0.7), 1.1, 100.0)
    assert np.allclose(out[:, 2], 0.7)
    out = f(kps_at(10, 10), 0.5, 100.0)  # a new clip: time went back, start over without smoothing
    assert np.allclose(out[:, :2], 10)


def test_engine_keeps_raw_and_smoothed(model_dir: Path, data_dir: Path) -> None:
    frames = [rgb for _, rgb in first_frames(data_dir / "gmdcsa24-dev" / "Subject 2" / "ADL" / "23.mp4", 40)]
    on = PoseEngine(PoseSettings(backend="cpu"), model_dir)
    off = PoseEngine(PoseSettings(backend="cpu", smoothing=SmoothingSettings(enabled=False)), model_dir)
    jitter_raw, jitter_smooth, differs = [], [], 0
    prev = None
    for i, rgb in enumerate(frames):
        p = on.process(rgb, i / 15).persons[0]
        q = off.process(rgb, i / 15).persons[0]
        assert p.keypoints_raw is not None and p.keypoints.shape == p.keypoints_raw.shape == (17, 3)
        assert np.array_equal(q.keypoints, q.keypoints_raw)  # off: nothing changed
        differs += not np.allclose(p.keypoints[:, :2], p.keypoints_raw[:, :2])
        if prev is not None:
            jitter_raw.append(np.abs(p.keypoints_raw[:, :2] - prev[0]).mean())
            jitter_smooth.append(np.abs(p.keypoints[:, :2] - prev[1]).mean())
        prev = (p.keypoints_raw[:, :2].copy(), p.keypoints[:, :2].copy())
    assert differs > 30
    # a person sitting on a bed eating: the smoothed keypoints move less from frame to frame
    assert np.mean(jitter_smooth) < np.mean(jitter_raw)
