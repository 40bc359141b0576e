"""The alternative model families on real images: MoveNet MultiPose as detector, BlazePose detector + full."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fallwatch.pose.detector import blazepose_anchors
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.estimator import BLAZEPOSE_TO_COCO, torso_score
from pose_testlib import load_rgb, video_frames


def spine_from_vertical(kps: np.ndarray) -> float:
    dx, dy = kps[[5, 6], :2].mean(axis=0) - kps[[11, 12], :2].mean(axis=0)
    return math.degrees(math.atan2(abs(dx), abs(dy)))


@pytest.fixture(scope="module")
def blazepose(model_dir: Path) -> PoseEngine:
    return PoseEngine(
        PoseSettings(backend="auto", detector="blazepose_detector", estimator="blazepose_full"), model_dir
    )


def test_blazepose_anchor_count() -> None:
    anchors = blazepose_anchors(224)
    assert anchors.shape == (2254, 2)
    assert anchors.min() > 0 and anchors.max() < 1


def test_blazepose_standing_and_33_landmarks(blazepose: PoseEngine, images_dir: Path) -> None:
    assert blazepose.backend == "cpu"  # no Edge TPU build of either model
    blazepose.reset()
    result = blazepose.process(load_rgb(images_dir / "fall_img_1.png"), 0.0)
    assert len(result.persons) == 1
    p = result.persons[0]
    assert p.keypoints33 is not None and p.keypoints33.shape == (33, 3)
    # the COCO-17 view is BlazePose's own landmarks, picked by name
    assert np.allclose(p.keypoints_raw, p.keypoints33[BLAZEPOSE_TO_COCO])
    assert spine_from_vertical(p.keypoints_raw) <= 25 and torso_score(p.keypoints_raw) >= 0.5


def test_blazepose_lying_from_its_rotated_region(blazepose: PoseEngine, images_dir: Path) -> None:
    blazepose.reset()
    result = blazepose.process(load_rgb(images_dir / "fall_img_9.png"), 0.0)
    assert len(result.persons) == 1
    kps = result.persons[0].keypoints_raw
    assert torso_score(kps) >= 0.5 and spine_from_vertical(kps) >= 60
    assert result.estimator_calls == 1  # the region was aligned: no rotation retries needed


def test_blazepose_background_nobody(blazepose: PoseEngine, images_dir: Path) -> None:
    blazepose.reset()
    for i in range(3):
        assert blazepose.process(load_rgb(images_dir / "background.jpg"), i / 30).persons == []


def test_multipose_detector_finds_the_couple(model_dir: Path, images_dir: Path) -> None:
    engine = PoseEngine(PoseSettings(backend="cpu", detector="movenet_multipose"), model_dir)
    result = engine.process(load_rgb(images_dir / "test_couple.jpg"), 0.0)
    assert len(result.persons) == 2 and result.detector_ran
    xs = sorted(float(p.keypoints_raw[[11, 12], 0].mean()) for p in result.persons)
    assert xs[1] - xs[0] > 150
    engine.reset()
    assert engine.process(load_rgb(images_dir / "background.jpg"), 0.0).persons == []


@pytest.mark.slow
def test_blazepose_tracks_through_a_fall(blazepose: PoseEngine, data_dir: Path) -> None:
    blazepose.reset()
    ids, n, last = set(), 0, None
    for t, rgb in video_frames(data_dir / "gmdcsa24-dev" / "Subject 2" / "Fall" / "13.mp4"):
        last = blazepose.process(rgb, t)
        ids.update(p.track_id for p in last.persons)
        n += 1
    assert n > 100 and len(ids) == 1
    assert last is not None and len(last.persons) == 1
    assert spine_from_vertical(last.persons[0].keypoints_raw) >= 60  # lying on the floor at the end


def test_cli_pose_json_has_33_landmarks_with_blazepose(
    model_dir: Path, images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    from fallwatch.daemon.cli.main import main as cli_main

    config = tmp_path / "fallwatch.yaml"
    config.write_text("pose:\n  detector: blazepose_detector\n  estimator: blazepose_full\n")
    rc = cli_main(
        ["pose", "-c", str(config), "--model-dir", str(model_dir), "--json", str(images_dir / "fall_img_9.png")]
    )
    assert rc == 0
    people = json.loads(capsys.readouterr().out)["people"]
    assert len(people) == 1
    assert len(people[0]["keypoints33"]) == 33 and len(people[0]["keypoints"]) == 17
    # COCO's left hip is BlazePose's landmark 23
    assert people[0]["keypoints"]["left_hip"][:2] == people[0]["keypoints33"][23][:2]
