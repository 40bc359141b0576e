"""The event object that leaves the rules: the same dict goes to MQTT, the debug page and stdout."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

ALARMS = ("fall", "person_down")  # the events that mean someone needs help
EVENT_TYPES = (*ALARMS, "recovered")
TEST = "test"  # not from the rules: a household's end-to-end check of its alerts (MQTT `{"test": true}`)


def utc_iso(wall: float) -> str:
    """A wall-clock time (seconds since the epoch) as ISO-8601 UTC with milliseconds and a trailing Z."""
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    """Wall-clock time now, as ``utc_iso``."""
    return utc_iso(time.time())


@dataclass
class Event:
    """One fall / person_down / recovered event (or a ``test`` one, see ``Event.test``).

    ``t`` and ``frame`` are media (or capture) time and frame number: the rules decide on those only.
    ``ts`` is wall-clock time for humans and brokers; it is stamped when the event is created, or passed in.
    """

    event: str
    source: str
    t: float
    frame: int
    track: int
    confidence: float
    spine_angle_deg: float
    angle_change_deg: float
    descent_rate: float
    box: list[float]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ts: str = field(default_factory=utc_now_iso)
    after_fall: Optional[bool] = None  # person_down only: whether a `fall` was seen before this long lie
    camera: Optional[str] = None  # the camera that saw it and the pose backend, set by the daemon as it leaves
    backend: Optional[str] = None

    def __post_init__(self) -> None:
        if self.event not in EVENT_TYPES and self.event != TEST:
            raise ValueError(f"unknown event type {self.event!r} (expected one of {', '.join(EVENT_TYPES)})")
        # The schema promises a 0..1 confidence (keypoint scores from a foreign recording can be anything).
        c = float(self.confidence)
        self.confidence = min(max(c, 0.0), 1.0) if math.isfinite(c) else 0.0

    @classmethod
    def test(cls, source: str) -> "Event":
        """A ``test`` event: the same fields as a real one, marked ``"test": true``; no person, no frame."""
        return cls(
            event=TEST,
            source=source,
            t=0.0,
            frame=0,
            track=0,
            confidence=0.0,
            spine_angle_deg=0.0,
            angle_change_deg=0.0,
            descent_rate=0.0,
            box=[],
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "event": self.event,
            "id": self.id,
            "source": self.source,
            "t": round(float(self.t), 3),
            "frame": int(self.frame),
            "ts": self.ts,
            "track": int(self.track),
            "confidence": round(float(self.confidence), 3),
            "spine_angle_deg": round(float(self.spine_angle_deg), 1),
            "angle_change_deg": round(float(self.angle_change_deg), 1),
            "descent_rate": round(float(self.descent_rate), 3),
            "box": [round(float(v), 1) for v in self.box],
        }
        for key in ("camera", "backend"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.event == "person_down":
            data["after_fall"] = bool(self.after_fall) if self.after_fall is not None else True
        elif self.event == TEST:
            data["test"] = True
        return data
