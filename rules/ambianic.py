"""Ambianic's published two-frame fall rule, as the baseline `rules.strategy: ambianic`.

Per person: compare the current frame with the last two compared frames (each at least
``ambianic_min_interval_s`` apart, at most ``ambianic_max_interval_s`` old). A fall is when the left or right
shoulder->hip line turned further from vertical (downward) and the angle between the earlier and the current
shoulder->hip line is >= ``ambianic_angle_deg``, and the mean spinal-vector score of the two frames is >=
``ambianic_confidence``. Only the cooldown is ours (Ambianic would report every qualifying frame).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .base import PersonPose, Rules, RuleSettings, finite_box, keypoint_box
from .events import Event
from .geometry import L_HIP, L_SHOULDER, R_HIP, R_SHOULDER, angle_from_vertical, finite_keypoints

log = logging.getLogger(__name__)


@dataclass
class _Frame:
    t: float
    lines: dict[str, tuple[np.ndarray, np.ndarray]]  # "left"/"right" -> (shoulder, hip)
    vertical: dict[str, float]  # side -> angle of that line from vertical
    score: float
    spine_angle: float


def _line_angle(line: tuple[np.ndarray, np.ndarray]) -> float:
    (x1, y1), (x2, y2) = line
    return math.degrees(math.atan2(y2 - y1, x1 - x2))


def _between(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    d = abs(_line_angle(a) - _line_angle(b)) % 360.0
    return 360.0 - d if d > 180.0 else d


class AmbianicRules(Rules):
    def __init__(self, settings: RuleSettings, source: str = "") -> None:
        self.s = settings
        self.source = source
        self._prev: dict[int, list[_Frame]] = {}
        self._last_fall: dict[int, float] = {}
        self._states: dict[int, str] = {}
        self._last_seen: dict[int, float] = {}

    def person_states(self) -> dict[int, str]:
        return dict(self._states)

    def _frame(self, t: float, kps: np.ndarray) -> Optional[_Frame]:
        th = self.s.ambianic_confidence
        lines, scores = {}, {}
        for side, (s, h) in (("left", (L_SHOULDER, L_HIP)), ("right", (R_SHOULDER, R_HIP))):
            score = float(min(kps[s, 2], kps[h, 2]))
            if score > th:
                lines[side] = (kps[s, :2].astype(float), kps[h, :2].astype(float))
                scores[side] = score
        if not lines:
            return None
        if len(lines) == 2:
            score = (scores["left"] + scores["right"]) / 2.0
            top = (lines["left"][0] + lines["right"][0]) / 2.0
            bottom = (lines["left"][1] + lines["right"][1]) / 2.0
        else:
            (side,) = lines
            score = scores[side] * 0.9  # Ambianic's 10% penalty for a one-sided spine
            top, bottom = lines[side]
        vertical = {side: angle_from_vertical(*line) for side, line in lines.items()}
        return _Frame(t, lines, vertical, score, angle_from_vertical(top, bottom))

    def update(self, t: float, frame: int, people: list[PersonPose], size: tuple[int, int]) -> list[Event]:
        events = []
        for person in people:
            tr = person.track
            self._states.setdefault(tr, "upright")
            self._last_seen[tr] = t
            prev = self._prev.setdefault(tr, [])
            if prev and prev[-1].t - t > self.s.ambianic_max_interval_s:
                prev.clear()  # time went back (a restarted source): the old frames are not "before" any more
            if prev and t - prev[-1].t < self.s.ambianic_min_interval_s:
                continue  # too soon after the last compared frame
            kps = finite_keypoints(person.keypoints)
            if kps.shape != (17, 3):
                continue
            cur = self._frame(t, kps)
            if cur is None:
                continue
            self._states[tr] = "down" if cur.spine_angle >= 60.0 else "upright"
            for old in reversed(prev):
                if t - old.t > self.s.ambianic_max_interval_s:
                    continue
                downward = any(
                    side in old.vertical and cur.vertical[side] > old.vertical[side] for side in cur.vertical
                )
                if not downward:
                    continue
                leaning = max(
                    (_between(old.lines[side], cur.lines[side]) for side in cur.lines if side in old.lines), default=0.0
                )
                leaning = math.ceil(leaning)
                score = (old.score + cur.score) / 2.0 if leaning >= self.s.ambianic_angle_deg else 0.0
                if score >= self.s.ambianic_confidence and score > 0:
                    if t - self._last_fall.get(tr, float("-inf")) >= self.s.cooldown_s:
                        self._last_fall[tr] = t
                        box = finite_box(person.box) if person.box is not None else None
                        box = box or keypoint_box(kps, 0.0)
                        events.append(
                            Event(
                                event="fall",
                                source=self.source,
                                t=t,
                                frame=frame,
                                track=tr,
                                confidence=score,
                                spine_angle_deg=cur.spine_angle,
                                angle_change_deg=cur.spine_angle - old.spine_angle,
                                descent_rate=0.0,
                                box=box,
                            )
                        )
                    break
            prev.append(cur)
            del prev[:-2]
        for tr in [k for k, seen in self._last_seen.items() if abs(t - seen) > self.s.track_forget_s]:
            for d in (self._prev, self._states, self._last_seen):
                d.pop(tr, None)
        # A track's cooldown outlives the track only as long as the cooldown itself: no growth over a long run.
        for tr in [
            k for k, when in self._last_fall.items() if k not in self._last_seen and abs(t - when) >= self.s.cooldown_s
        ]:
            del self._last_fall[tr]
        return events
