"""Tracking on the real GMDCSA24 clips: one id per person, and a track that survives the fall."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.estimator import torso_score
from fallwatch.pose.types import PoseResult
from pose_testlib import first_frames, load_rgb, video_frames

CONFIDENT_TORSO = 0.3


def manifest(data_dir: Path) -> dict:
    return json.loads((data_dir / "gmdcsa24-dev" / "manifest.json").read_text())


def fall_clips() -> list[str]:
    import os

    root = Path(os.environ.get("FALLWATCH_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
    try:
        clips = json.loads((root / "gmdcsa24-dev" / "manifest.json").read_text())["clips"]
    except OSError:
        return []
    return [c["path"] for c in clips if c["label"] == "fall"]


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> PoseEngine:
    return PoseEngine(PoseSettings(backend="cpu"), model_dir)


@pytest.mark.slow
def test_one_person_keeps_one_id(engine: PoseEngine, data_dir: Path) -> None:
    engine.reset()
    clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "ADL" / "10.mp4"  # reading while walking across the room
    ids: list[int] = []
    n = detector_runs = 0
    for t, rgb in video_frames(clip):
        result = engine.process(rgb, t)
        n += 1
        detector_runs += result.detector_ran
        ids.extend(p.track_id for p in result.persons)
        assert len(result.persons) <= 1
    assert n > 100
    assert len(ids) >= 0.95 * n, "the person is tracked in (nearly) every frame"
    assert len(set(ids)) == 1
    # crop tracking: the detector runs on about one frame in detect_every, not on every frame
    assert detector_runs <= n / engine.settings.detect_every + 3


@pytest.mark.slow
@pytest.mark.parametrize("clip", fall_clips())
def test_track_survives_the_fall(engine: PoseEngine, data_dir: Path, clip: str) -> None:
    entry = next(c for c in manifest(data_dir)["clips"] if c["path"] == clip)
    engine.reset()
    results: list[tuple[float, PoseResult]] = [
        (t, engine.process(rgb, t)) for t, rgb in video_frames(data_dir / "gmdcsa24-dev" / clip)
    ]
    t_last = results[-1][0]
    # One second after the fall ends; several annotated falls end at (or past) the end of the clip, so then
    # the last frame.
    t_check = min(entry["fall_end_s"] + 1.0, t_last)
    assert t_check > entry["fall_start_s"] + 1.0
    faller = [r.persons for t, r in results if t <= entry["fall_start_s"]][-1]
    assert len(faller) == 1, "one person in view when the fall starts"
    faller_id = faller[0].track_id
    t, at_check = next((t, r) for t, r in results if t >= t_check)
    person = next((p for p in at_check.persons if p.track_id == faller_id), None)
    assert person is not None, f"track {faller_id} lost by t={t:.2f}s (have {[p.track_id for p in at_check.persons]})"
    assert torso_score(person.keypoints_raw) >= CONFIDENT_TORSO
    # through the whole second before the check, with a torso the estimator is sure of
    window = [
        max((torso_score(p.keypoints_raw) for p in r.persons if p.track_id == faller_id), default=0.0)
        for t, r in results
        if t_check - 1.0 <= t <= t_check
    ]
    assert min(window) >= engine.settings.min_torso_score
    assert float(np.median(window)) >= 0.4
    # and it was tracked, with its torso, through most of the time on the floor
    after = [r for t, r in results if entry["fall_start_s"] <= t <= t_check]
    tracked = sum(any(p.track_id == faller_id for p in r.persons) for r in after)
    assert tracked >= 0.9 * len(after)


@pytest.mark.slow
def test_track_times_out_and_a_returning_person_gets_a_new_id(
    model_dir: Path, data_dir: Path, images_dir: Path
) -> None:
    engine = PoseEngine(PoseSettings(backend="cpu", track_timeout_s=1.0), model_dir)
    clip = data_dir / "gmdcsa24-dev" / "Subject 2" / "ADL" / "23.mp4"
    video = [rgb for _, rgb in first_frames(clip, 20)]
    h, w = video[0].shape[:2]
    empty = cv2.resize(load_rgb(images_dir / "background.jpg"), (w, h))
    t = 0.0
    for rgb in video[:10]:
        first = engine.process(rgb, t)
        t += 1 / 15
    assert len(first.persons) == 1
    first_id = first.persons[0].track_id
    # the person is gone: no one is reported, and the track is forgotten once the timeout has passed
    gone_at = t
    while t < gone_at + 1.5:
        assert engine.process(empty, t).persons == []
        t += 1 / 15
    assert engine.tracker.tracks == []
    # An empty room is searched every idle_search_every_s: the person coming back is found within that, new id.
    found_at = None
    for i, rgb in enumerate(video[10:20]):
        back = engine.process(rgb, t)
        if back.persons:
            found_at = i
            break
        t += 1 / 15
    assert found_at is not None and found_at / 15 <= engine.tracker.s.idle_search_every_s + 1e-6
    assert len(back.persons) == 1 and back.persons[0].track_id != first_id
    # reset() forgets everyone at once
    engine.reset()
    assert engine.tracker.tracks == []


@pytest.mark.slow
def test_two_people_keep_their_own_ids(engine: PoseEngine, data_dir: Path) -> None:
    """Two real clips side by side: two people, two ids, and neither id jumps to the other person."""
    root = data_dir / "gmdcsa24-dev"
    left = video_frames(root / "Subject 1" / "ADL" / "10.mp4")
    right = video_frames(root / "Subject 2" / "ADL" / "24.mp4")
    engine.reset()
    sides: dict[int, set[str]] = {}
    both = n = 0
    for (t, a), (_, b) in zip(left, right, strict=False):  # two clips side by side, as long as the shorter
        frame = np.hstack([cv2.resize(a, (640, 480)), cv2.resize(b, (640, 480))])
        result = engine.process(frame, t)
        n += 1
        both += len(result.persons) == 2
        for p in result.persons:
            sides.setdefault(p.track_id, set()).add("L" if (p.box[0] + p.box[2]) / 2 < 640 else "R")
    assert n > 100
    assert both >= 0.8 * n
    assert len(sides) == 2 and sorted(next(iter(s)) for s in sides.values()) == ["L", "R"]
    assert all(len(s) == 1 for s in sides.values())
