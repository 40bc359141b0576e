"""What a camera high on the wall shows that a chest-high one does not: people walking toward it slide far down
the image, upright; and a new track's first poses are often of something else (furniture at the image's top,
the frame's edge) before the estimator finds the person. Neither is a fall."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from fallwatch.rules import RuleSettings, make_rules
from rules_testlib import STAND, Body, run, side_fall, timeline


def test_walking_toward_a_high_camera_is_no_fall() -> None:
    """From far (small, high in the image) to near (larger, low): the torso midpoint goes down a whole body
    height in 1.5 s with the spine upright, as far and fast as a fall along the line of sight."""
    far = replace(STAND, floor=250.0, scale=0.6)
    near = replace(STAND, floor=470.0, scale=0.8)
    walk = timeline([(0.0, far), (2.0, far), (3.5, near)])
    assert run({1: walk}, duration=8.0) == []
    # the same slide with the body not growing (so not coming nearer) and ending lying is still a fall
    lying = replace(far, floor=470.0, hip_up=0.05, spine=90.0, legs="along")
    assert [e.event for e in run({1: timeline([(0.0, far), (2.0, far), (2.8, lying)])}, duration=8.0)] == ["fall"]


def _garbage_then_person(t: float) -> Optional[Body]:
    """A new track's first 0.4 s: a small pose high in the image (a picture, a chair back); then the person,
    standing, far lower down, for good."""
    if t < 0.4:
        return replace(STAND, x=520.0, floor=110.0, scale=0.25, score=0.4)
    return STAND


def test_a_new_tracks_first_poses_elsewhere_are_no_before() -> None:
    assert run({1: _garbage_then_person}, duration=6.0) == []
    # the person then falling is caught as usual, against their own standing pose
    fall = side_fall(start=3.0)
    assert [e.event for e in run({1: lambda t: _garbage_then_person(t) if t < 3.0 else fall(t)}, duration=8.0)] == [
        "fall"
    ]


def test_first_poses_elsewhere_are_no_before_with_margins_kept_too() -> None:
    rules = make_rules(RuleSettings(), source="s", margins=True)
    assert [e.event for e in run({1: _garbage_then_person}, duration=6.0, rules=rules)] == []
