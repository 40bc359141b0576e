"""Values shared by every rule strategy: settings, one person's pose in one frame, the Rules interface."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np

from .events import Event
from .zones import Zone

STRATEGIES = ("fallwatch", "ambianic")


@dataclass
class RuleSettings:
    """Every threshold of the rules. Lengths are in body heights (the person's estimated standing height in
    the image, so the same value holds near and far from the camera), times in seconds of media time.
    Mirrored field-for-field by ``config.schema.RulesConfig`` (the ``rules:`` section of the YAML)."""

    strategy: str = "fallwatch"
    # -- fallwatch: the fall window --
    window_min_s: float = 0.25  # the change is measured over at least this long (one-frame jitter is not motion)
    window_max_s: float = 2.0  # ... and at most this long: a real fall takes well under 2 s from balance to floor
    reference_s: float = 0.5  # the "before" pose is a median over this span, so one garbage pose cannot be it
    fall_angle_deg: float = 60.0  # spine turning this far away from vertical counts as fully "toppling"
    min_drop: float = 0.25  # torso midpoint (between hips and shoulders) must drop this many body heights
    # when the spine fully topples (a fall to the side)
    drop_without_turn: float = 0.5  # ... and this many when the spine does not turn (a fall along the line of
    # sight); sitting down fast drops it ~1/3 with the spine upright
    min_hip_drop: float = 0.1  # the hips themselves must come down this much (~17 cm) before `fall`: bending
    # from the waist turns the spine and drops the shoulders, not the hips
    min_descent_rate: float = 0.5  # body heights/s (~0.85 m/s): slower descents are deliberate (kneeling, lying down)
    down_angle_deg: float = 60.0  # spine this far from vertical counts as lying, wherever the hips are
    settle_s: float = 0.25  # the body must stay down this long after the drop before `fall` is emitted
    settle_fraction: float = 0.6  # share of the measured frames in the settle span that must look down
    cooldown_s: float = 10.0  # at most one `fall` per person in this span (one incident, one alarm)
    down_alert_s: float = 60.0  # on the floor this long, after a fall or not: `person_down` (a "long lie")
    recover_s: float = 3.0  # upright again this long after a fall: `recovered`
    upright_angle_deg: float = 35.0  # spine within this of vertical, hips back up, counts as upright
    min_keypoint_score: float = 0.2  # keypoints below this score are ignored
    min_body_frac: float = 0.08  # a "before" body shorter than this fraction of the frame height is implausible
    track_forget_s: float = 10.0  # forget an upright person not seen for this long
    floor_hip_max: float = 0.2  # hips at most this high above where the person's feet stood (~34 cm): on the
    # floor (sitting or lying there); a chair seat puts the hip joints ~0.3 up
    confirm_s: float = 3.0  # a fast drop that ends squatting or sitting (spine upright, legs folded under the
    # hips) is a `fall` only if the person is still down this long after landing
    zones: tuple = ()  # Zone values (rules.zones): "rest" zones are where lying is normal
    # -- ambianic baseline (its published defaults) --
    ambianic_confidence: float = 0.6  # spinal-vector score threshold (Ambianic's default; its MoveNet tests used 0.11)
    ambianic_angle_deg: float = 60.0  # leaning angle between the two frames' shoulder->hip lines ("fall_factor")
    ambianic_min_interval_s: float = 1.0  # frames closer than this to the last compared frame are skipped
    ambianic_max_interval_s: float = 10.0  # a previous frame older than this is not compared

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"rules.strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if not 0 < self.window_min_s < self.window_max_s:
            raise ValueError("rules: need 0 < window_min_s < window_max_s")
        if self.drop_without_turn < self.min_drop:
            raise ValueError("rules: drop_without_turn must be >= min_drop")
        self.zones = tuple(z if isinstance(z, Zone) else Zone.from_mapping(z) for z in self.zones)

    @classmethod
    def from_mapping(cls, values: Any) -> "RuleSettings":
        """Build from a dict or any object with matching attributes (e.g. the pydantic RulesConfig);
        unknown keys are ignored, missing ones keep their defaults."""
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict):
            values = {n: getattr(values, n) for n in names if hasattr(values, n)}
        return cls(**{k: v for k, v in values.items() if k in names})


def finite_box(box: Any) -> Optional[list[float]]:
    """``box`` as four finite floats, or None when it is missing or not usable."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    return values if len(values) == 4 and all(np.isfinite(values)) else None


@dataclass
class PersonPose:
    """One person in one frame, as the rules see it (no model objects)."""

    track: int
    box: Optional[tuple]  # x0, y0, x1, y1 pixels, or None
    keypoints: np.ndarray  # (17, 3): x, y pixels, score; COCO-17 order (smoothed: what the rules judge)
    keypoints_raw: Optional[np.ndarray] = None  # the same before smoothing, kept in recordings


class Rules:
    """A rule strategy: fed frame by frame, returns the events each frame produces."""

    s: RuleSettings  # the thresholds in force (set by each strategy's constructor, replaced by reconfigure)

    def update(self, t: float, frame: int, people: list[PersonPose], size: tuple[int, int]) -> list[Event]:
        raise NotImplementedError

    def person_states(self) -> dict[int, str]:
        """track -> "upright" | "falling" | "down" (for the debug overlay)."""
        raise NotImplementedError

    def reconfigure(self, settings: "RuleSettings") -> bool:
        """Apply new thresholds in place, keeping each person's history and open incidents (a configuration
        reload must not forget that someone is on the floor). False when ``settings`` need another strategy:
        the caller then starts new rules."""
        if settings.strategy != self.s.strategy:
            return False
        self.s = settings
        return True


def keypoint_box(kps: np.ndarray, min_score: float) -> list[float]:
    """Bounding box of the confident keypoints (fallback when the person has no box); non-finite ones are
    ignored, so the box is always four finite numbers."""
    kps = np.asarray(kps, dtype=float)
    ok = kps[np.isfinite(kps).all(axis=1) & (kps[:, 2] >= min_score)]
    if len(ok) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(ok[:, 0].min()), float(ok[:, 1].min()), float(ok[:, 0].max()), float(ok[:, 1].max())]
