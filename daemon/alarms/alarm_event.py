"""What the alarm desk sends while an alarm is open: a ``reminder`` (``level`` 1, 2, 3...) or, when it closes, a
``resolved`` (``reason``, ``by``). Typed until it leaves the process: ``to_dict`` is its one serialisation (MQTT,
notifications, the page, the log), the opening event's fields with its own ``id`` and ``ts``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

AlarmEventKind = Literal["reminder", "resolved"]


@dataclass(frozen=True)
class AlarmEvent:
    event: AlarmEventKind
    alarm_id: str  # the event that opened the alarm
    alarm_kind: str  # fall | person_down
    opening: Mapping[str, Any]  # the opening event as published: a reminder repeats its fields (camera, track...)
    ts: str  # when it was sent (the desk's wall clock, ISO 8601 UTC)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    level: Optional[int] = None  # reminder: reminders sent so far, this one included
    reason: Optional[str] = None  # resolved: ack | false_alarm | recovered
    by: Optional[str] = None  # resolved: who answered

    @property
    def camera(self) -> Optional[str]:
        camera = self.opening.get("camera")
        return None if camera is None else str(camera)

    def to_dict(self) -> dict[str, Any]:
        extra = {"level": self.level} if self.event == "reminder" else {"reason": self.reason, "by": self.by}
        return {
            **self.opening,
            "event": self.event,
            "id": self.id,
            "ts": self.ts,
            "alarm_id": self.alarm_id,
            "alarm_kind": self.alarm_kind,
            **extra,
        }
