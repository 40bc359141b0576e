"""Awkward inputs and failures on real images and clips: rotated people, time going back, tiny and odd frames,
and odd frames (an Edge TPU failing mid-run: tests/edgetpu)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fallwatch.pose.engine import FrameError, PoseEngine, PoseSettings, SmoothingSettings
from fallwatch.pose.estimator import torso_score
from pose_testlib import first_frames, load_rgb


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> PoseEngine:
    return PoseEngine(PoseSettings(backend="cpu", smoothing=SmoothingSettings(enabled=False)), model_dir)


@pytest.mark.parametrize("k", [1, -1])
def test_person_rotated_by_90_maps_back_onto_the_upright_result(engine: PoseEngine, images_dir: Path, k: int) -> None:
    """A standing person turned by np.rot90 lies along the frame; the rotation retry finds them and its
    keypoints, mapped back through np.rot90's own index mapping, land on the upright run's keypoints (same
    joint, same side: a mirrored or transposed mapping would swap left and right)."""
    img = load_rgb(images_dir / "fall_img_1.png")
    h, w = img.shape[:2]
    engine.reset()
    (upright,) = engine.process(img, 0.0).persons
    engine.reset()
    result = engine.process(np.rot90(img, k), 0.0)
    assert len(result.persons) == 1 and result.estimator_calls >= 3  # the ±90° retry ran
    kp = result.persons[0].keypoints_raw
    assert torso_score(kp) >= 0.5
    back = kp.copy()
    if k == 1:  # rot90 counter-clockwise: rotated[i, j] = img[j, w - 1 - i]
        back[:, 0], back[:, 1] = w - 1 - kp[:, 1], kp[:, 0]
    else:  # clockwise: rotated[i, j] = img[h - 1 - j, i]
        back[:, 0], back[:, 1] = kp[:, 1], h - 1 - kp[:, 0]
    ref = upright.keypoints_raw
    both = (ref[:, 2] >= 0.3) & (back[:, 2] >= 0.3)
    assert both.sum() >= 12
    height = upright.box[3] - upright.box[1]
    err = np.hypot(*(back[both, :2] - ref[both, :2]).T) / height
    assert np.median(err) < 0.04 and err.max() < 0.08, err


def test_time_going_back_leaves_no_immortal_ghost(engine: PoseEngine, images_dir: Path) -> None:
    """A track last seen at t=100 must not haunt a source that restarted at t=0 until t passes 100."""
    engine.reset()
    assert len(engine.process(load_rgb(images_dir / "fall_img_1.png"), 100.0).persons) == 1
    empty = np.zeros((480, 640, 3), dtype=np.uint8)
    for t in (0.0, 0.5, 1.0, 2.5, 3.0):
        result = engine.process(empty, t)
    assert result.persons == [] and engine.tracker.tracks == []
    assert result.estimator_calls <= 3  # only the whole-frame look, no lost track searching on


@pytest.mark.parametrize("shape", [(8, 8, 3), (8, 2000, 3), (3000, 9, 3)])
def test_tiny_and_extreme_frames_run(engine: PoseEngine, shape: tuple[int, int, int]) -> None:
    engine.reset()
    result = engine.process(np.full(shape, 128, dtype=np.uint8), 0.0)
    assert result.persons == []


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((7, 640, 3), dtype=np.uint8),
        np.zeros((1, 48, 64, 3), dtype=np.uint8),
        np.zeros((48, 64, 3), dtype=np.int16),
        np.zeros((48, 64, 3), dtype=bool),
        np.zeros((48, 64, 3), dtype=object),
    ],
)
def test_more_wrong_frames_are_frame_errors(engine: PoseEngine, bad: np.ndarray) -> None:
    with pytest.raises(FrameError):
        engine.process(bad, 0.0)


# -- the command line on unusable but readable input -------------------------------------------------------------


def test_cli_pose_image_too_small_is_one_line(
    images_dir: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    from fallwatch.daemon.cli.main import main as cli_main

    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((4, 4, 3), dtype=np.uint8))
    rc = cli_main(["pose", "--model-dir", str(model_dir), "--json", str(tiny), str(images_dir / "fall_img_1.png")])
    assert rc == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "fall_img_1.png" in out  # the next image still runs
    lines = [line for line in err.splitlines() if line.startswith("fallwatch pose:")]
    assert len(lines) == 1 and "tiny.png" in lines[0] and "8x8" in lines[0]
    assert "Traceback" not in err


def test_bench_on_an_empty_room_is_valid_json(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    """Nobody in view: every frame runs the whole-frame look with its rotations (never a single estimator
    invoke), and the report must still be JSON (no NaN) with a usable per-invoke figure."""
    import json

    from fallwatch.daemon.cli.main import main as cli_main

    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    clip = tmp_path / "empty.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 15, (320, 240))
    for _ in range(10):
        out.write(np.zeros((240, 320, 3), dtype=np.uint8))
    out.release()
    rc = cli_main(["bench", "--model-dir", str(model_dir), "--source", str(clip), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in the report"))
    assert report["frames"] == 10 and report["estimator_calls_per_frame"] >= 2
    assert report["model_cost_ratio"] >= 1.0 and report["model_cost_ratio_mean"] >= 1.0


def test_time_stamps_repeated_slightly_late_or_far_apart(engine: PoseEngine, images_dir: Path) -> None:
    img = load_rgb(images_dir / "fall_img_1.png")
    engine.reset()
    ids = [p.track_id for t in (0.0, 0.1, 0.1, 0.05, 0.2) for p in engine.process(img, t).persons]
    assert len(ids) == 5 and len(set(ids)) == 1  # repeated and a little late: the same person, the same id
    (later,) = engine.process(img, 1e6).persons  # a huge gap: the old track timed out, a new one starts
    assert later.track_id != ids[0] and len(engine.tracker.tracks) == 1


def test_a_long_lost_track_does_not_overflow_its_search(model_dir: Path, images_dir: Path) -> None:
    """pose.track_timeout_s may be 60 s, and at 60 fps a lost track is lost for up to 3600 frames: the growing
    search area must not compute 1.4 ** 3600 (a float overflow). Jump straight to that many lost frames."""
    engine = PoseEngine(PoseSettings(backend="cpu", track_timeout_s=60.0), model_dir)
    assert len(engine.process(load_rgb(images_dir / "fall_img_1.png"), 0.0).persons) == 1
    engine.tracker.tracks[0].lost = 3000
    result = engine.process(np.zeros((480, 640, 3), dtype=np.uint8), 50.0)
    assert result.persons == [] and len(engine.tracker.tracks) == 1  # still searching, within its timeout


@pytest.mark.slow
def test_cameras_sharing_one_engine_each_keep_their_own_tracks(model_dir: Path, data_dir: Path) -> None:
    """Two trackers on one engine, fed alternately (two cameras): each gives what an engine of its own gives."""
    frames = first_frames(data_dir / "gmdcsa24-dev" / "Subject 1" / "ADL" / "10.mp4", 30)
    alone = PoseEngine(PoseSettings(backend="cpu"), model_dir)
    shared = PoseEngine(PoseSettings(backend="cpu"), model_dir)
    first, second = shared.make_tracker(), shared.make_tracker()
    blank = np.zeros_like(frames[0][1])
    for i, (t, rgb) in enumerate(frames):
        expected = alone.process(rgb, t)
        a = shared.process(rgb, t, first)
        shared.process(blank, t, second)  # an empty room on the other camera: it must not end the first's tracks
        b = shared.process(rgb, t, second) if i >= 10 else None  # a camera that starts later starts afresh
        assert [p.track_id for p in a.persons] == [p.track_id for p in expected.persons], i
        for pa, pe in zip(a.persons, expected.persons, strict=True):
            np.testing.assert_allclose(pa.keypoints, pe.keypoints, atol=1e-3, err_msg=f"frame {i}")
        if b is not None:
            assert [p.track_id for p in b.persons] == [1], i
    assert len(first.tracks) == 1 and shared.tracker.tracks == []
