"""Ignore zones (TV, mirror, poster): people found inside one are not tracked, on real frames and real models."""

from __future__ import annotations

from pathlib import Path

import pytest
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.tracker import in_ignore_zone
from pose_testlib import first_frames

CLIP = "Subject 1/ADL/10.mp4"  # one person walking about the room
WHOLE = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
CORNER = ((0.0, 0.0), (0.15, 0.0), (0.15, 0.15), (0.0, 0.15))


@pytest.fixture(scope="module")
def frames(data_dir: Path) -> list:
    return first_frames(data_dir / "gmdcsa24-dev" / CLIP, 12)


def _tracked(model_dir: Path, frames: list, zones: tuple) -> int:
    engine = PoseEngine(PoseSettings(backend="cpu", num_threads=1, ignore_zones=zones), model_dir)
    return sum(len(engine.process(rgb, t).persons) for t, rgb in frames)


@pytest.mark.slow
def test_a_person_inside_an_ignore_zone_is_not_tracked(model_dir: Path, frames: list) -> None:
    assert _tracked(model_dir, frames, ()) >= len(frames) - 1  # the person is there, found in (nearly) every frame
    assert _tracked(model_dir, frames, (CORNER,)) >= len(frames) - 1  # a zone elsewhere changes nothing
    assert _tracked(model_dir, frames, (WHOLE,)) == 0


@pytest.mark.slow
def test_a_zone_set_while_running_applies_to_new_people(model_dir: Path, frames: list) -> None:
    engine = PoseEngine(PoseSettings(backend="cpu", num_threads=1), model_dir)
    engine.set_ignore_zones((WHOLE,))
    assert sum(len(engine.process(rgb, t).persons) for t, rgb in frames) == 0


def test_only_a_figure_inside_the_zone_is_ignored() -> None:
    tv = ((0.1, 0.1), (0.4, 0.1), (0.4, 0.5), (0.1, 0.5))
    w, h = 640, 480
    assert in_ignore_zone((100.0, 70.0, 220.0, 220.0), (tv,), w, h)  # the figure on the screen
    assert not in_ignore_zone((60.0, 30.0, 300.0, 470.0), (tv,), w, h)  # someone standing in front of it
    assert not in_ignore_zone((400.0, 70.0, 500.0, 220.0), (tv,), w, h)  # elsewhere
    assert not in_ignore_zone((100.0, 70.0, 220.0, 220.0), (), w, h)
