"""Real inference on the shared still images, bad frames, and `fallwatch pose` on good and bad files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fallwatch.daemon.cli.main import main as cli_main
from fallwatch.pose.engine import FrameError, PoseEngine, PoseSettings
from fallwatch.pose.estimator import torso_score
from fallwatch.pose.types import KEYPOINT_NAMES, PoseResult
from pose_testlib import load_rgb

L_SH, R_SH, L_HIP, R_HIP = 5, 6, 11, 12


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> PoseEngine:
    return PoseEngine(PoseSettings(backend="cpu"), model_dir)


def run(engine: PoseEngine, path: Path) -> PoseResult:
    engine.reset()
    return engine.process(load_rgb(path), 0.0)


def spine_from_vertical(kps: np.ndarray) -> float:
    """Angle in degrees between mid-shoulder -> mid-hip and the vertical."""
    sh = kps[[L_SH, R_SH], :2].mean(axis=0)
    hip = kps[[L_HIP, R_HIP], :2].mean(axis=0)
    dx, dy = sh - hip
    return math.degrees(math.atan2(abs(dx), abs(dy)))


@pytest.mark.parametrize(
    "estimator, reference",
    [
        ("movenet_lightning", "movenet_single_pose_lightning_ptq_reference.csv"),
        ("movenet_thunder", "movenet_single_pose_thunder_ptq_reference.csv"),
    ],
)
def test_squat_matches_coral_reference(model_dir: Path, images_dir: Path, estimator: str, reference: str) -> None:
    from fallwatch.pose.models import MODELS

    if not (model_dir / MODELS[estimator].file).is_file():
        pytest.skip(f"{MODELS[estimator].file} is not in {model_dir} (fallwatch models fetch {estimator})")
    engine = PoseEngine(PoseSettings(backend="cpu", estimator=estimator), model_dir)
    rows = list(csv.DictReader((model_dir / reference).open()))
    ref = np.array([[float(r["keypoint_x"]), float(r["keypoint_y"])] for r in rows])
    assert ref.shape == (17, 2)
    img = load_rgb(images_dir / "squat.bmp")
    h, w = img.shape[:2]
    # the first frame (detector crop) and the next ones (crops from the previous keypoints) all agree
    for i in range(3):
        result = engine.process(img, i / 30)
        assert len(result.persons) == 1
        kps = result.persons[0].keypoints_raw
        diff = np.abs(kps[:, :2] / (w, h) - ref)
        worst = KEYPOINT_NAMES[int(diff.max(axis=1).argmax())]
        assert diff.max() <= 0.05, f"frame {i}: {worst} off by {diff.max():.3f}"


def test_couple_two_distinct_boxes(engine: PoseEngine, images_dir: Path) -> None:
    result = run(engine, images_dir / "test_couple.jpg")
    assert len(result.persons) == 2
    a, b = result.persons
    assert a.track_id != b.track_id
    ix = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
    iy = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    inter = max(ix, 0) * max(iy, 0)
    area = lambda bx: (bx[2] - bx[0]) * (bx[3] - bx[1])  # noqa: E731
    assert inter / (area(a.box) + area(b.box) - inter) < 0.3
    # each person's hips lie in their own box, and the two hip centres are apart
    centres = [p.keypoints_raw[[L_HIP, R_HIP], 0].mean() for p in result.persons]
    assert abs(centres[0] - centres[1]) > 150


def test_background_nobody(engine: PoseEngine, images_dir: Path) -> None:
    img = load_rgb(images_dir / "background.jpg")
    engine.reset()
    for i in range(5):  # the detector, the whole-frame pass and any track they might start: nobody, every frame
        result = engine.process(img, i / 30)
        assert result.persons == [], [p.box for p in result.persons]
        assert result.detector_ran


def test_standing_spine_vertical(engine: PoseEngine, images_dir: Path) -> None:
    result = run(engine, images_dir / "fall_img_1.png")
    assert len(result.persons) == 1
    kps = result.persons[0].keypoints_raw
    assert torso_score(kps) >= 0.5
    assert spine_from_vertical(kps) <= 25


def test_lying_person_found_with_spine_near_horizontal(engine: PoseEngine, images_dir: Path) -> None:
    result = run(engine, images_dir / "fall_img_9.png")
    assert len(result.persons) >= 1
    best = max(result.persons, key=lambda p: torso_score(p.keypoints_raw))
    kps = best.keypoints_raw
    assert kps[[L_SH, R_SH], 2].max() >= 0.3 and kps[[L_HIP, R_HIP], 2].max() >= 0.3
    assert torso_score(kps) >= 0.3
    assert spine_from_vertical(kps) >= 60


def test_lying_person_needs_the_rotation_retry(model_dir: Path, images_dir: Path) -> None:
    """Without the ±90° retry MoveNet does not see the lying person as well (which is why the retry exists)."""
    with_retry = run(
        PoseEngine(PoseSettings(backend="cpu", rotation_retry=True), model_dir), images_dir / "fall_img_9.png"
    )
    without = run(
        PoseEngine(PoseSettings(backend="cpu", rotation_retry=False), model_dir), images_dir / "fall_img_9.png"
    )
    score = lambda r: max((torso_score(p.keypoints_raw) for p in r.persons), default=0.0)  # noqa: E731
    assert score(with_retry) > score(without)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((480, 640), dtype=np.uint8),
        np.zeros((480, 640, 4), dtype=np.uint8),
        np.zeros((480, 640, 3), dtype=np.float32),
        np.zeros((0, 640, 3), dtype=np.uint8),
        "not an array",
    ],
)
def test_wrong_frame_is_frame_error(engine: PoseEngine, bad) -> None:
    before = engine.bad_frames
    with pytest.raises(FrameError) as err:
        engine.process(bad, 0.0)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    assert engine.bad_frames == before + 1


@pytest.mark.parametrize("t", [float("nan"), float("inf"), None, "soon"])
def test_bad_time_stamp_is_frame_error(engine: PoseEngine, t) -> None:
    with pytest.raises(FrameError, match="finite number"):
        engine.process(np.zeros((48, 64, 3), dtype=np.uint8), t)


def test_non_contiguous_frame_is_fine(engine: PoseEngine, images_dir: Path) -> None:
    img = load_rgb(images_dir / "fall_img_1.png")
    engine.reset()
    result = engine.process(img[:, ::-1], 0.0)  # mirrored view: a valid frame with negative strides
    assert len(result.persons) == 1


def test_cli_pose_json(images_dir: Path, model_dir: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    rc = cli_main(
        [
            "pose",
            "--model-dir",
            str(model_dir),
            "--json",
            str(images_dir / "test_couple.jpg"),
            str(images_dir / "background.jpg"),
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    couple, empty = (json.loads(line) for line in lines)
    assert couple["backend"] == "cpu" and len(couple["people"]) == 2
    person = couple["people"][0]
    assert len(person["box"]) == 4 and 0 < person["score"] <= 1
    assert list(person["keypoints"]) == list(KEYPOINT_NAMES)
    x, y, s = person["keypoints"]["left_hip"]
    assert 0 <= x < 1920 and 0 <= y < 1278 and 0 <= s <= 1
    assert empty == {"image": str(images_dir / "background.jpg"), "backend": "cpu", "people": []}


def test_cli_pose_corrupt_image(
    images_dir: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    rc = cli_main(
        [
            "pose",
            "--model-dir",
            str(model_dir),
            str(corrupt),
            str(images_dir / "fall_img_1.png"),
            str(empty),
            str(tmp_path / "missing.jpg"),
        ]
    )
    assert rc != 0
    out, err = capsys.readouterr()
    assert "fall_img_1.png" in out and "1 person" in out and "left_hip" in out
    err_lines = [line for line in err.splitlines() if line.startswith("fallwatch pose:")]
    assert len(err_lines) == 3
    assert "corrupt.jpg" in err_lines[0] and "not a readable image" in err_lines[0]
    assert "empty.png" in err_lines[1] and "missing.jpg" in err_lines[2] and "no such file" in err_lines[2]
    assert "Traceback" not in err


def test_cli_pose_missing_model(images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    rc = cli_main(["pose", "--model-dir", str(tmp_path), str(images_dir / "fall_img_1.png")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fallwatch: model file {tmp_path / 'ssd_mobilenet_v1_coco_quant_detect.tflite'} is missing; "
        "run: fallwatch models fetch ssd_mobilenet_v1"
    ]
