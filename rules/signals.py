"""The fall rule's signals over a pose sequence, for plots (event view, `replay --plot`) and tuning at a desk.

One person (the track with the most measured frames, or the one asked for). Per frame, the rules' own figures
(FallRules.measures): the spine's angle from vertical, the torso midpoint's drop in body heights below the highest
"before" pose of the rule's window, the downward torso speed in body heights per second, and whether the rules
hold the person "on the floor" (down after a fall, or on the floor with no fall seen: what person_down counts).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Optional

from .base import RuleSettings
from .fall import FallRules


def _rounded(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def fall_signals(frames: Iterable[Any], settings: RuleSettings, track: Optional[int] = None) -> dict[str, Any]:
    """``frames``: objects with ``t``, ``frame``, ``size`` and ``people`` (PersonPose-like: ``track``,
    ``keypoints``), as ``read_recording`` yields. Returns {"track", "t", "spine_angle_deg", "drop",
    "descent_rate", "on_floor", "thresholds"}; a value is None where the person was not measured (or no "before"
    pose exists yet); on_floor is 1 or 0 in every frame the rules hold the person."""
    frames = list(frames)
    if track is None:
        counts = Counter(p.track for fr in frames for p in fr.people)
        track = counts.most_common(1)[0][0] if counts else None
    rules = FallRules(settings)
    out: dict[str, list] = {"t": [], "spine_angle_deg": [], "drop": [], "descent_rate": [], "on_floor": []}
    for fr in frames:
        t = float(fr.t)
        rules.update(t, fr.frame, fr.people, fr.size)
        m = rules.measures(track, t) if track is not None else None
        held = rules.on_floor().get(track) if track is not None else None
        out["t"].append(round(t, 4))
        out["spine_angle_deg"].append(_rounded(m["spine_angle_deg"] if m is not None else None, 2))
        out["drop"].append(_rounded(m["drop"] if m is not None else None, 3))
        out["descent_rate"].append(_rounded(m["descent_rate"] if m is not None else None, 3))
        out["on_floor"].append(None if held is None else int(held))
    return {
        "track": track,
        **out,
        "thresholds": {
            "fall_angle_deg": settings.fall_angle_deg,
            "down_angle_deg": settings.down_angle_deg,
            "min_drop": settings.min_drop,
            "drop_without_turn": settings.drop_without_turn,
            "min_descent_rate": settings.min_descent_rate,
        },
    }
