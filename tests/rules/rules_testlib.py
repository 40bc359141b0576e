"""Synthetic people for the rule tests: COCO-17 keypoints from adult proportions, postures interpolated between
keyframes, and a driver that feeds them to the rules frame by frame.

Bodies are built from adult proportions (fractions of standing height H): hips 0.49 H above the ankles, a
shoulder-to-hip torso of 0.29 H, the head 0.1 H past the shoulders. Motions use realistic durations: a fall
takes ~0.7 s from balance to floor; deliberate movements (kneeling, lying down) take a second or more.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np
from fallwatch.rules import PersonPose, RuleSettings, make_rules
from fallwatch.rules.events import Event

H = 300.0  # standing body height in pixels
FLOOR = 420.0  # image y of the ankles when standing
SIZE = (640, 480)


@dataclass(frozen=True)
class Body:
    """Posture at one instant. hip_up: hips above the floor line (body heights); spine: degrees from vertical,
    positive leaning to +x; legs: "down" (ankles on the floor below), "along" (continuing the spine line,
    lying), "front" (stretched out sideways, seated on the floor) or "folded" (squatting, sitting cross-legged
    with the feet under the hips); floor: image y of the floor under the
    person (moves down when they come toward the camera)."""

    x: float = 320.0
    hip_up: float = 0.49
    spine: float = 0.0
    legs: str = "down"
    floor: float = FLOOR
    score: float = 0.9
    head: bool = True
    scale: float = 1.0  # apparent size (grows as the person comes toward the camera)


def keypoints(b: Body, h: float = H) -> np.ndarray:
    h = h * b.scale
    kp = np.zeros((17, 3), dtype=np.float32)
    hip = np.array([b.x, b.floor - b.hip_up * h])
    up = np.array([math.sin(math.radians(b.spine)), -math.cos(math.radians(b.spine))])
    side = np.array([-up[1], up[0]])  # perpendicular: spreads left/right joints
    shoulder = hip + 0.29 * h * up
    nose = shoulder + 0.10 * h * up
    if b.legs == "down":
        ankle = np.array([b.x, b.floor])
    elif b.legs == "front":  # seated on the floor, legs stretched out sideways in the image
        ankle = hip + np.array([0.49 * h, 0.0])
    elif b.legs == "folded":  # squatting or sitting cross-legged: feet on the floor under the hips, knees up
        ankle = np.array([b.x + 0.05 * h, b.floor])
    else:
        ankle = hip - 0.49 * h * up
    knee = (hip + ankle) / 2 if b.legs != "folded" else hip + np.array([0.2 * h, -0.02 * h])
    pts = {
        0: nose,
        1: nose + 0.02 * h * side,
        2: nose - 0.02 * h * side,
        3: nose + 0.04 * h * side,
        4: nose - 0.04 * h * side,
        5: shoulder + 0.1 * h * side,
        6: shoulder - 0.1 * h * side,
        7: shoulder + 0.12 * h * side + 0.15 * h * -up,
        8: shoulder - 0.12 * h * side + 0.15 * h * -up,
        9: shoulder + 0.12 * h * side + 0.3 * h * -up,
        10: shoulder - 0.12 * h * side + 0.3 * h * -up,
        11: hip + 0.07 * h * side,
        12: hip - 0.07 * h * side,
        13: knee + 0.06 * h * side,
        14: knee - 0.06 * h * side,
        15: ankle + 0.06 * h * side,
        16: ankle - 0.06 * h * side,
    }
    for i, p in pts.items():
        kp[i, :2] = p
        kp[i, 2] = b.score
    if not b.head:
        kp[0:5] = 0.0  # out of view: nothing found
    return kp


def _smooth(u: float) -> float:
    """Ease in/out: motions start and stop gently (peak speed ~1.6x the mean)."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def _fall_profile(u: float) -> float:
    """Accelerating like a topple (slow loss of balance, fast end), peak speed ~2x the mean."""
    u = min(max(u, 0.0), 1.0)
    return u * u


NUMERIC = ("x", "hip_up", "spine", "floor", "score", "scale")


def timeline(keys: list[tuple[float, Body]], profile: Callable[[float], float] = _smooth) -> Callable[[float], Body]:
    """Interpolate postures between (time, Body) keyframes."""

    def at(t: float) -> Body:
        if t <= keys[0][0]:
            return keys[0][1]
        for (t0, b0), (t1, b1) in itertools.pairwise(keys):
            if t <= t1:
                u = profile((t - t0) / (t1 - t0)) if t1 > t0 else 1.0
                vals = {k: getattr(b0, k) + (getattr(b1, k) - getattr(b0, k)) * u for k in NUMERIC}
                legs = b1.legs if u >= 0.5 else b0.legs
                return replace(b0, legs=legs, head=b1.head, **vals)
        return keys[-1][1]

    return at


def run(
    tracks: dict[int, Callable[[float], Optional[Body]]],
    duration: float,
    fps: float = 30.0,
    settings: Optional[RuleSettings] = None,
    drop: float = 0.0,
    seed: int = 0,
    mutate: Optional[Callable[[int, float, np.ndarray], np.ndarray]] = None,
    rules=None,
) -> list[Event]:
    """Feed the rules frame by frame; ``drop`` is the share of frames lost entirely."""
    rules = rules or make_rules(settings or RuleSettings(), source="synthetic")
    rng = random.Random(seed)
    events: list[Event] = []
    n = int(duration * fps)
    for frame in range(n):
        t = frame / fps
        if drop and rng.random() < drop:
            continue
        people = []
        for track, body_at in tracks.items():
            b = body_at(t)
            if b is None:
                continue
            kp = keypoints(b)
            if mutate is not None:
                kp = mutate(track, t, kp)
            people.append(PersonPose(track=track, box=None, keypoints=kp))
        events.extend(rules.update(t, frame, people, SIZE))
    return events


def kinds(events: list[Event]) -> list[str]:
    return [e.event for e in events]


STAND = Body()
LYING = Body(hip_up=0.08, spine=90.0, legs="along")


def side_fall(start: float = 2.0, took: float = 0.7, then: Optional[list[tuple[float, Body]]] = None):
    keys = [(0.0, STAND), (start, STAND), (start + took, LYING)] + (then or [])
    fall = timeline(keys[:3], _fall_profile)
    rest = timeline(keys[2:]) if then else None
    return lambda t: fall(t) if rest is None or t <= start + took else rest(t)
