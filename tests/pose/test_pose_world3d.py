"""BlazePose's 3D world landmarks (output Identity_4) on real photos: a standing torso is near vertical, a lying one
near horizontal, in metres, and a rotated crop's points come back in the frame's axes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.estimator import BlazePoseEstimator, Crop, Estimate, crop_around_box
from fallwatch.pose.world3d import CAMERA_UP, angle_between, legs3d, torso3d, world_landmarks
from pose_testlib import load_rgb


@pytest.fixture(scope="module")
def blazepose(model_dir: Path) -> PoseEngine:
    return PoseEngine(
        PoseSettings(backend="cpu", detector="blazepose_detector", estimator="blazepose_full", num_threads=1),
        model_dir,
    )


def person_crop(engine: PoseEngine, rgb: np.ndarray, angle: float = 0.0) -> Crop:
    engine.reset()
    persons = engine.process(rgb, 0.0).persons
    assert len(persons) == 1
    return crop_around_box(persons[0].box, angle=angle)


def estimate(engine: PoseEngine, rgb: np.ndarray, crop: Crop) -> Estimate:
    assert isinstance(engine.estimator, BlazePoseEstimator)
    est = engine.estimator.estimate(rgb, crop)
    assert est.world is not None and est.world.shape == (33, 3) and est.kps33 is not None
    return est


def test_standing_torso_is_vertical_and_metres(blazepose: PoseEngine, images_dir: Path) -> None:
    rgb = load_rgb(images_dir / "fall_img_1.png")
    est = estimate(blazepose, rgb, person_crop(blazepose, rgb))
    torso, legs = torso3d(est.world, est.kps33[:, 2]), legs3d(est.world, est.kps33[:, 2])
    assert torso is not None and legs is not None
    assert torso.confidence >= 0.9
    assert torso.inclination_deg <= 20  # measured 9 (camera at chest height)
    assert legs.inclination_deg <= 25
    assert 0.35 <= torso.length_m <= 0.65  # an adult's hips to shoulders, in metres
    # the origin is between the hips
    assert np.linalg.norm(est.world[[23, 24]].mean(axis=0)) < 0.05


def test_lying_torso_is_horizontal_in_the_frames_axes(blazepose: PoseEngine, images_dir: Path) -> None:
    rgb = load_rgb(images_dir / "fall_img_9.png")
    crop = person_crop(blazepose, rgb, angle=90.0)  # the body lies along x: turned upright in the model's input
    est = estimate(blazepose, rgb, crop)
    torso = torso3d(est.world, est.kps33[:, 2])
    assert torso is not None and torso.confidence >= 0.9
    assert torso.inclination_deg >= 70  # measured 88
    # rotated back into the frame's axes, the 3D torso points the way the 2D one does in the frame
    kps = est.kps33
    spine2d = kps[[11, 12], :2].mean(axis=0) - kps[[23, 24], :2].mean(axis=0)
    assert angle_between(np.array([*spine2d, 0.0]), np.array([*torso.vector[:2], 0.0])) <= 30
    # in the crop's own axes (no rotation back) the torso would point up: the rotation is what makes it horizontal
    raw = np.zeros((39, 3))
    raw[:33] = est.world
    unrotated = world_landmarks(raw.reshape(-1), -90.0)
    upright = torso3d(unrotated, kps[:, 2])
    assert upright is not None and upright.inclination_deg <= 30


def test_world_landmarks_turn_with_the_crop() -> None:
    raw = np.zeros((39, 3))
    raw[11] = raw[12] = (0.0, -0.5, 0.1)  # shoulders above the hips in the crop
    scores = np.ones(33)
    for angle, expect in ((0.0, (0.0, -0.5)), (90.0, (0.5, 0.0)), (180.0, (0.0, 0.5)), (-90.0, (-0.5, 0.0))):
        torso = torso3d(world_landmarks(raw.reshape(-1), angle), scores)
        assert torso is not None
        assert np.allclose(torso.vector, (*expect, 0.1), atol=1e-9), angle
    assert math.isclose(angle_between(np.array([1.0, 0, 0]), CAMERA_UP), 90.0)


def test_bad_world_output_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"world landmarks: expected 117 values \(39 x 3\), got 195"):
        world_landmarks(np.zeros(195), 0.0)
    with pytest.raises(ValueError, match="zero vector"):
        angle_between(np.zeros(3), CAMERA_UP)
    # shoulders on the hips: no torso to measure
    assert torso3d(np.zeros((33, 3)), np.ones(33)) is None


def test_cost_bench_measures_both_in_one_run(model_dir: Path, data_dir: Path) -> None:
    bench = Path(__file__).resolve().parents[2] / "bench" / "world3d_cost.py"
    clip = data_dir / "gmdcsa24-dev" / "Subject 2" / "Fall" / "13.mp4"
    args = [sys.executable, str(bench), "--source", str(clip), "--frames", "5", "--model-dir", str(model_dir)]
    out = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["calls"] == 5
    # BlazePose full (fp32, 256 px, 39 points in 2D and 3D) costs more CPU than int8 MoveNet Lightning (192 px)
    assert figures["cpu_ratio"] > 1.0
    missing = subprocess.run(
        [*args[:2], "--source", str(clip.with_name("nosuch.mp4")), "--model-dir", str(model_dir)],
        capture_output=True,
        text=True,
    )
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == f"world3d_cost: cannot open video {clip.with_name('nosuch.mp4')}"
    )
