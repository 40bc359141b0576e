"""The fall rule's signals over a pose sequence, for plots (event view, `replay --plot`) and tuning at a desk.

One person (the track with the most measured frames, or the one asked for). Per frame: the spine's angle from
vertical, the torso midpoint's drop in body heights below the highest "before" pose of the rule's window, and
the downward torso speed in body heights per second, measured as the rules measure them (same geometry, same
window and reference spans), and whether the rules themselves hold the person "on the floor" (down after a fall,
or on the floor with no fall seen: what person_down counts). Pure: no I/O, no clock.
"""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Iterable, Optional

from .base import RuleSettings
from .fall import FallRules
from .geometry import measure


def _centre(g: Any) -> float:
    return (g.hip_y + g.shoulder_y) / 2.0


def fall_signals(frames: Iterable[Any], settings: RuleSettings, track: Optional[int] = None) -> dict[str, Any]:
    """``frames``: objects with ``t`` and ``people`` (PersonPose-like: ``track``, ``keypoints``), as
    ``read_recording`` yields. Returns {"track", "t", "spine_angle_deg", "drop", "descent_rate", "on_floor",
    "thresholds"}; a value is None where the person was not measured (or no "before" pose exists yet); on_floor is
    1 or 0 in every frame the rules hold the person."""
    frames = list(frames)
    if track is None:
        counts = Counter(p.track for fr in frames for p in fr.people)
        track = counts.most_common(1)[0][0] if counts else None
    ts: list[float] = []
    angle: list[Optional[float]] = []
    drop: list[Optional[float]] = []
    rate: list[Optional[float]] = []
    floor: list[Optional[int]] = []
    rules = FallRules(settings)
    seen: list[tuple[float, float, float]] = []  # (t, centre y, height) of measured samples
    for fr in frames:
        rules.update(float(fr.t), fr.frame, fr.people, fr.size)
        held = rules.on_floor().get(track) if track is not None else None
        floor.append(None if held is None else int(held))
        person = next((p for p in fr.people if p.track == track), None)
        g = measure(person.keypoints, settings.min_keypoint_score) if person is not None else None
        ts.append(round(float(fr.t), 4))
        if g is None:
            angle.append(None), drop.append(None), rate.append(None)
            continue
        t = float(fr.t)
        seen.append((t, _centre(g), g.height_px))
        seen = [s for s in seen if s[0] >= t - settings.window_max_s - settings.reference_s]
        angle.append(round(g.spine_angle_deg, 2))
        # "before" poses: medians over reference_s ending window_min_s .. window_max_s ago, the highest one wins
        refs = []
        for end_t, _, _ in seen:
            if not settings.window_min_s <= t - end_t <= settings.window_max_s:
                continue
            span = [s for s in seen if end_t - settings.reference_s <= s[0] <= end_t]
            if len(span) >= 3:
                refs.append((statistics.median(s[1] for s in span), statistics.median(s[2] for s in span)))
        if refs:
            centre_y, height = min(refs)
            drop.append(round((_centre(g) - centre_y) / height, 3) if height > 0 else None)
        else:
            drop.append(None)
        older = [s for s in seen if t - s[0] >= settings.window_min_s]
        if older and older[-1][2] > 0 and t - older[-1][0] <= 2 * settings.window_min_s + 0.2:
            base = older[-1]
            rate.append(round((_centre(g) - base[1]) / (t - base[0]) / base[2], 3))
        else:
            rate.append(None)
    return {"track": track, "t": ts, "spine_angle_deg": angle, "drop": drop, "descent_rate": rate,
            "on_floor": floor, "thresholds": {"fall_angle_deg": settings.fall_angle_deg, "down_angle_deg": settings.down_angle_deg,
                           "min_drop": settings.min_drop, "drop_without_turn": settings.drop_without_turn,
                           "min_descent_rate": settings.min_descent_rate}}
