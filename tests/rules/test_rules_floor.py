"""Whole incidents on synthetic keypoints: "on the floor" as a state of its own, one steady alarm for a still,
partly hidden person, recovery only by the fallen person themself, fast squatting or sitting that is no fall, and
the rest zones (the ignore zones act in the pose engine: tests/pose/test_pose_zones.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fallwatch.rules import RuleSettings, make_rules
from fallwatch.rules.zones import Zone, point_in_polygon
from rules_testlib import FLOOR, LYING, SIZE, STAND, Body, H, keypoints, kinds, run, side_fall, timeline

SQUAT = Body(hip_up=0.1, spine=30.0, legs="folded")  # deep squat, leaning forward, feet under the hips
CROSS_LEGGED = Body(hip_up=0.05, spine=25.0, legs="folded")


def _hidden(seed: int, garbage_every_s: float = 7.0):
    """Partly hidden behind furniture, still: keypoint jitter, the legs or the head often not found, now and
    then a garbage pose (the torso found upright where the wheelchair is), and frames with nobody at all."""
    rng = np.random.default_rng(seed)

    def mutate(track: int, t: float, kp: np.ndarray) -> np.ndarray:
        kp = kp.copy()
        kp[:, :2] += rng.normal(0.0, 2.0, size=(17, 2))
        if rng.random() < 0.5:
            kp[13:17, 2] = 0.05  # legs behind the wheelchair
        if rng.random() < 0.3:
            kp[0:5, 2] = 0.05
        if t > 4.0 and (t % garbage_every_s) < 1 / 30:
            upright = keypoints(Body(x=float(kp[11, 0]), hip_up=0.3))
            kp[[5, 6, 11, 12]] = upright[[5, 6, 11, 12]]
        return kp

    return mutate


@pytest.mark.slow
@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_a_still_partly_hidden_person_keeps_one_steady_alarm(fps: float) -> None:
    s = RuleSettings(down_alert_s=60.0)
    rules = make_rules(s, source="synthetic")
    events = run(
        {1: side_fall(start=2.0)},
        duration=150.0,
        fps=fps,
        settings=s,
        drop=0.3,
        seed=4,
        mutate=_hidden(seed=int(fps)),
        rules=rules,
    )
    assert [(e.event, e.after_fall) if e.event == "person_down" else e.event for e in events] == [
        "fall",
        ("person_down", True),
    ]
    assert rules.person_states() == {1: "down"}


def test_a_fallen_person_found_again_under_new_ids_keeps_one_alarm() -> None:
    # The detector loses the lying person for seconds at a time and finds them again under a new id, twice:
    # still one `fall`, one `person_down`, nothing else.
    s = RuleSettings(down_alert_s=30.0)
    body = side_fall(start=1.0)
    tracks = {
        1: lambda t: body(t) if t < 10.0 else None,
        2: lambda t: body(t) if 13.0 <= t < 25.0 else None,
        3: lambda t: body(t) if t >= 27.0 else None,
    }
    events = run(tracks, duration=60.0, settings=s, mutate=_hidden(seed=2, garbage_every_s=1000.0))
    assert kinds(events) == ["fall", "person_down"]


def test_someone_standing_beside_a_fallen_person_is_not_their_recovery() -> None:
    # A helper walks in and stands right beside the fallen person for half a minute; for ten seconds of it the
    # fallen person is hidden behind the helper. The fallen person never gets up: no `recovered`.
    s = RuleSettings(down_alert_s=20.0, recover_s=3.0, track_forget_s=5.0)
    body = side_fall(start=1.0)
    helper = timeline([(5.0, Body(x=620.0)), (8.0, Body(x=420.0))])
    rules = make_rules(s, source="synthetic")
    tracks = {1: lambda t: None if 15.0 <= t < 25.0 else body(t), 2: lambda t: helper(t) if t >= 5.0 else None}
    events = run(tracks, duration=45.0, settings=s, rules=rules)
    assert [(e.event, e.track) for e in events] == [("fall", 1), ("person_down", 1)]
    assert rules.person_states()[1] == "down"


def test_the_fallen_person_getting_up_under_a_new_id_is_their_recovery() -> None:
    # Lost by the tracker while getting up, and found again standing where they lay.
    s = RuleSettings(down_alert_s=60.0, recover_s=3.0, track_forget_s=5.0)
    body = side_fall(start=1.0)
    rise = timeline([(10.0, LYING), (12.0, STAND)])
    events = run(
        {1: lambda t: body(t) if t < 10.0 else None, 2: lambda t: rise(t) if t >= 12.0 else None},
        duration=20.0,
        settings=s,
    )
    assert [(e.event, e.track) for e in events] == [("fall", 1), ("recovered", 1)]
    # Found again half-way up, still down: the new id takes the incident over at once, and recovers.
    events = run(
        {1: lambda t: body(t) if t < 10.0 else None, 2: lambda t: rise(t) if t >= 11.0 else None},
        duration=20.0,
        settings=s,
    )
    assert [(e.event, e.track) for e in events] == [("fall", 1), ("recovered", 2)]


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_slow_slide_to_sitting_on_the_floor_gets_person_down_with_no_fall(fps: float) -> None:
    # Down a wall over 6 s (far slower than any fall) to sit on the floor, legs out, and never up again.
    seated = Body(hip_up=0.05, spine=12.0, legs="front")
    body = timeline([(0.0, STAND), (3.0, STAND), (9.0, seated)])
    s = RuleSettings(down_alert_s=60.0)
    events = run({1: body}, duration=80.0, fps=fps, settings=s)
    assert [(e.event, e.after_fall) for e in events] == [("person_down", False)]
    # On the floor (hips within floor_hip_max of it) from about 8.5 s of the 3-9 s slide, plus down_alert_s.
    assert 3.0 + 60.0 < events[0].t <= 9.0 + 60.0
    assert events[0].to_dict()["after_fall"] is False


def test_a_person_on_the_floor_lost_by_the_detector_still_gets_person_down() -> None:
    # Slid down, then not found any more (people on the floor are often missed), now and then found again
    # under a new id: still on the floor, so `person_down` comes all the same, once.
    seated = Body(hip_up=0.05, spine=12.0, legs="front")
    body = timeline([(0.0, STAND), (3.0, STAND), (9.0, seated)])
    s = RuleSettings(down_alert_s=30.0, track_forget_s=5.0)
    tracks = {1: lambda t: body(t) if t < 15.0 else None, 2: lambda t: body(t) if 28.0 <= t < 30.0 else None}
    events = run(tracks, duration=60.0, settings=s)
    assert [(e.event, e.after_fall) for e in events] == [("person_down", False)]
    assert 3.0 + 30.0 < events[0].t <= 9.0 + 30.0


def test_a_slow_slide_then_getting_up_recovers() -> None:
    seated = Body(hip_up=0.05, spine=12.0, legs="front")
    body = timeline([(0.0, STAND), (3.0, STAND), (9.0, seated), (20.0, seated), (22.0, STAND)])
    events = run({1: body}, duration=30.0, settings=RuleSettings(down_alert_s=10.0))
    assert [(e.event, e.after_fall) for e in events] == [("person_down", False), ("recovered", None)]


def test_sitting_on_a_chair_for_long_is_not_on_the_floor() -> None:
    chair = Body(hip_up=0.27, spine=5.0)
    body = timeline([(0.0, STAND), (2.0, STAND), (3.5, chair)])
    assert run({1: body}, duration=40.0, settings=RuleSettings(down_alert_s=20.0)) == []


@pytest.mark.parametrize("posture", [SQUAT, CROSS_LEGGED], ids=["squat", "sit-cross-legged"])
@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_fast_squat_or_sit_to_the_floor_then_getting_up_is_no_alarm(posture: Body, fps: float) -> None:
    # Down in 0.5 s (as fast as a fall), a couple of seconds there, up again in 0.8 s.
    body = timeline([(0.0, STAND), (2.0, STAND), (2.5, posture), (4.5, posture), (5.3, STAND)])
    assert run({1: body}, duration=12.0, fps=fps) == []
    # The same drop is a fall candidate: without the confirmation it would have alarmed.
    assert kinds(run({1: body}, duration=12.0, fps=fps, settings=RuleSettings(confirm_s=0.0))) == ["fall", "recovered"]


def test_a_fast_squat_that_stays_down_is_a_fall_after_confirm_s() -> None:
    body = timeline([(0.0, STAND), (2.0, STAND), (2.5, SQUAT)])
    events = run({1: body}, duration=10.0)
    assert kinds(events) == ["fall"]
    assert 2.0 + RuleSettings().confirm_s <= events[0].t <= 2.5 + RuleSettings().confirm_s + 0.2


BED = Zone("rest", ((0.55, 0.5), (1.0, 0.5), (1.0, 1.0), (0.55, 1.0)), name="bed")


@pytest.mark.slow
def test_lying_on_a_bed_in_a_rest_zone_raises_nothing() -> None:
    # Sits on the bed, then drops back onto it fast and lies there for two minutes.
    x = 0.75 * SIZE[0]
    on_bed = Body(x=x, hip_up=0.3, spine=5.0)
    lying = Body(x=x, hip_up=0.1, spine=90.0, legs="along")
    body = timeline([(0.0, Body(x=x)), (1.0, Body(x=x)), (2.0, on_bed), (4.0, on_bed), (4.5, lying)])
    zoned = RuleSettings(down_alert_s=60.0, zones=(BED,))
    assert run({1: body}, duration=130.0, settings=zoned) == []
    # Without the zone the same thing is a fall on the floor.
    assert kinds(run({1: body}, duration=130.0, settings=RuleSettings(down_alert_s=60.0))) == ["fall", "person_down"]


def test_a_fall_onto_a_rest_zone_from_outside_it_is_a_fall_but_no_long_lie() -> None:
    fall = timeline([(0.0, STAND), (2.0, STAND), (2.7, replace(LYING, x=0.62 * SIZE[0]))], lambda u: u * u)
    s = RuleSettings(down_alert_s=20.0, zones=(BED,))
    assert kinds(run({1: fall}, duration=40.0, settings=s)) == ["fall"]


def test_zone_settings_take_plain_mappings_and_refuse_nonsense() -> None:
    s = RuleSettings(zones=({"kind": "rest", "points": [[0, 0], [1, 0], [1, 1]], "name": "sofa"},))
    assert s.zones == (Zone("rest", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)), "sofa"),)
    assert s.zones[0].contains(0.9, 0.1) and not s.zones[0].contains(0.1, 0.9)
    with pytest.raises(ValueError, match="at least 3 points"):
        Zone("rest", ((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match="kind"):
        Zone("bed", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)))
    assert point_in_polygon(0.5, 0.5, [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)])
    assert not point_in_polygon(0.9, 0.5, [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)])


def test_walking_up_close_to_the_camera_is_not_on_the_floor() -> None:
    # Walks toward the camera until the feet leave the frame at the bottom and stays there a minute: the hips
    # end up low in the image, below where the feet last stood, but the body grew: not on the floor.
    near = Body(floor=FLOOR + 0.5 * H, scale=1.6)
    body = timeline([(0.0, STAND), (2.0, STAND), (5.0, near)])

    def clipped(track: int, t: float, kp: np.ndarray) -> np.ndarray:
        kp = kp.copy()
        kp[kp[:, 1] > SIZE[1], 2] = 0.0
        return kp

    assert run({1: body}, duration=75.0, settings=RuleSettings(down_alert_s=60.0), mutate=clipped) == []


def _torso_seen_at(share_at):
    """The torso (and head) tilted towards or away from the camera: the image shows it shortened to
    share_at(t) of its length along the same line, the hips where they are."""

    def mutate(track: int, t: float, kp: np.ndarray) -> np.ndarray:
        kp = kp.copy()
        hip = kp[[11, 12], :2].mean(axis=0)
        for i in range(0, 11):  # head, shoulders, arms
            kp[i, :2] = hip + (kp[i, :2] - hip) * share_at(t)
        return kp

    return mutate


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_a_fall_straight_away_from_the_camera_is_caught_by_its_shortened_torso(fps: float) -> None:
    # Backwards, away from the camera: the spine stays vertical in the image, the torso shrinks to a third of
    # its length and its midpoint drops 0.4 body heights: less than a fall with no turn needs (0.5) but the
    # torso lying along the line of sight is the topple.
    body = timeline([(0.0, STAND), (2.0, STAND), (2.7, Body(hip_up=0.15, spine=0.0))], lambda u: u * u)
    assert run({1: body}, duration=6.0, fps=fps) == []  # the same drop with the torso at full length
    events = run({1: body}, duration=6.0, fps=fps, mutate=_torso_seen_at(lambda t: np.interp(t, [2.0, 2.7], [1, 0.3])))
    assert kinds(events) == ["fall"]


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_a_fast_squat_leaning_towards_the_camera_is_no_fall(fps: float) -> None:
    # Leaning 45 deg forward towards the camera shortens the torso in the image to 0.7 of its length: not lying.
    squat = Body(hip_up=0.12, spine=5.0, legs="folded")
    body = timeline([(0.0, STAND), (2.0, STAND), (2.5, squat), (4.5, squat), (5.3, STAND)])
    lean = _torso_seen_at(lambda t: np.interp(t, [2.0, 2.5, 4.5, 5.3], [1, 0.7, 0.7, 1]))
    assert run({1: body}, duration=10.0, fps=fps, mutate=lean) == []


def test_a_partial_upright_pose_where_the_fallen_person_lies_is_not_their_recovery() -> None:
    # Behind a wheelchair: the fallen person is lost, and where they lie the pose engine finds a new "person",
    # a shoulder and a hip on the chair, upright, legs not seen, for ten seconds. Not them getting up.
    s = RuleSettings(down_alert_s=20.0, recover_s=3.0, track_forget_s=5.0)
    body = side_fall(start=1.0)
    ghost = Body(hip_up=0.3, spine=5.0)

    def no_legs(track: int, t: float, kp: np.ndarray) -> np.ndarray:
        if track == 2:
            kp = kp.copy()
            kp[13:17, 2] = 0.0
        return kp

    events = run(
        {1: lambda t: body(t) if t < 6.0 else None, 2: lambda t: ghost if 9.0 <= t < 19.0 else None},
        duration=30.0,
        settings=s,
        mutate=no_legs,
    )
    assert kinds(events) == ["fall", "person_down"]
