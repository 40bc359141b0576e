"""Open alarms: a ``fall`` or ``person_down`` stays open until someone answers it, with reminders until then.

An alarm is keyed by the id of the event that opened it, per camera. It closes when it is acknowledged (someone is
on the way), marked a false alarm, or the rules see that person recover; closing publishes ``resolved`` with the
``reason`` (``ack`` | ``false_alarm`` | ``recovered``) and ``by`` whom. While it is open, a ``reminder`` goes out
every ``alerts.remind_s`` with ``level`` 1, 2, 3... so an automation can escalate.

A ``person_down`` of the same camera and track as an open ``fall`` is the same incident: it joins that alarm (the
alarm becomes a ``person_down`` and answers to either id) instead of opening a second one that would remind twice.

The desk is bookkeeping with an injected wall clock (tests move a fake one); the daemon calls ``tick`` from its loop
and hands the events the desk emits to MQTT and notifications. Open alarms are kept in the daemon's store
(``remember``/``recall``) after every change, so they survive a restart; their times are wall-clock times.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Protocol

from fallwatch.daemon.alarms.alarm_event import AlarmEvent
from fallwatch.rules.events import utc_iso

log = logging.getLogger(__name__)

OPENS = ("fall", "person_down")
REASONS = ("ack", "false_alarm", "recovered")
STORE_KEY = "open_alarms"
BY_MAX = 64  # characters of a command's "by"


class Store(Protocol):
    def recall(self, key: str) -> Optional[str]: ...

    def remember(self, key: str, value: str) -> None: ...


@dataclass
class Alarm:
    id: str  # the event that opened it
    camera: str
    kind: str  # fall | person_down
    track: int
    opened_at: float  # wall clock
    next_at: float  # when the next reminder is due (wall clock)
    level: int = 0  # reminders sent so far
    acknowledged: bool = False  # (an acknowledgement closes the alarm: an open one is never acknowledged)
    also: list[str] = field(default_factory=list)  # ids of later events of the same incident
    event: dict = field(default_factory=dict)  # the opening event as published: reminders repeat its fields

    def view(self) -> dict[str, Any]:
        """What the state topic, the heartbeat, /api/stats, the page and `fallwatch watch` show."""
        return {
            "id": self.id,
            "camera": self.camera,
            "kind": self.kind,
            "opened": utc_iso(self.opened_at),
            "level": self.level,
            "acknowledged": self.acknowledged,
        }

    def answers_to(self, target: str) -> bool:
        return target == "all" or target == self.id or target in self.also


class AlarmDesk:
    def __init__(
        self,
        store: Optional[Store],
        remind_s: float,
        emit: Callable[[AlarmEvent], None],
        clock: Callable[[], float] = time.time,
        on_change: Optional[Callable[[], None]] = None,
    ):
        """``emit``: publishes a ``reminder`` or ``resolved`` event (called under the desk's lock, so they go out
        in order). ``on_change``: the open alarms changed (the daemon refreshes its state and figures)."""
        self._store = store
        self.remind_s = float(remind_s)
        self._emit = emit
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.RLock()
        self._alarms: dict[str, Alarm] = {}
        self._store_failed = False
        self._load()

    # -- what opens and closes alarms --------------------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        """An event as published (with ``id``, ``camera``, ``track``): a fall or person_down opens an alarm, a
        recovery closes that person's."""
        kind = event.get("event")
        if kind in OPENS:
            self._open(event)
        elif kind == "recovered":
            with self._lock:
                gone = [
                    a
                    for a in self._alarms.values()
                    if a.camera == event.get("camera") and a.track == int(event.get("track", -1))
                ]
                for alarm in gone:
                    self._close(alarm, "recovered", "rules")
                if gone:
                    self._changed()

    def _open(self, event: dict) -> None:
        now = self._clock()
        with self._lock:
            camera, track = str(event.get("camera")), int(event.get("track", -1))
            same = next((a for a in self._alarms.values() if a.camera == camera and a.track == track), None)
            if same is not None and event["event"] == "person_down":
                same.also.append(str(event["id"]))
                same.kind = "person_down"
                log.warning("alarm %s (camera %s): the person is still down (event %s)", same.id, camera, event["id"])
            else:
                alarm = Alarm(
                    id=str(event["id"]),
                    camera=camera,
                    kind=str(event["event"]),
                    track=track,
                    opened_at=now,
                    next_at=now + self.remind_s,
                    event=dict(event),
                )
                self._alarms[alarm.id] = alarm
                log.warning("alarm %s open: %s on camera %s, until someone answers", alarm.id, alarm.kind, camera)
            self._changed()

    def answer(self, target: str, reason: str, by: str, camera: Optional[str] = None) -> list[dict]:
        """Close the alarm ``target`` (an event id, or "all", of ``camera`` when given) as ``reason`` ("ack" or
        "false_alarm"), answered ``by`` whom. Returns the views of the alarms closed; ValueError says why none."""
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r} (expected one of {', '.join(REASONS)})")
        with self._lock:
            hits = [a for a in self._alarms.values() if a.answers_to(target) and camera in (None, a.camera)]
            if not hits:
                where = f" on camera {camera}" if camera else ""
                what = "no open alarm" if target == "all" else f"no open alarm {target}"
                raise ValueError(f"{what}{where}")
            for alarm in hits:
                self._close(alarm, reason, by)
            self._changed()
            return [a.view() for a in hits]

    def _close(self, alarm: Alarm, reason: str, by: str) -> None:
        """Under the lock."""
        del self._alarms[alarm.id]
        log.warning("alarm %s (%s, camera %s) resolved: %s by %s", alarm.id, alarm.kind, alarm.camera, reason, by)
        self._send(AlarmEvent("resolved", alarm.id, alarm.kind, alarm.event, self._now(), reason=reason, by=by))

    # -- reminders ---------------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Send the reminders that are due; how many. A reminder late by more than a period (the daemon was down)
        goes out once, and the cadence starts again from now."""
        now = self._clock()
        sent = 0
        with self._lock:
            for alarm in list(self._alarms.values()):
                if now < alarm.next_at:
                    continue
                alarm.level += 1
                alarm.next_at += self.remind_s
                if alarm.next_at <= now:
                    alarm.next_at = now + self.remind_s
                log.warning(
                    "alarm %s (%s, camera %s) still open: reminder level %d",
                    alarm.id,
                    alarm.kind,
                    alarm.camera,
                    alarm.level,
                )
                self._send(AlarmEvent("reminder", alarm.id, alarm.kind, alarm.event, self._now(), level=alarm.level))
                sent += 1
            if sent:
                self._changed()
        return sent

    def set_remind_s(self, remind_s: float) -> None:
        """SIGHUP: a new period; the next reminder of each alarm is due one new period after its last one."""
        with self._lock:
            for alarm in self._alarms.values():
                alarm.next_at += float(remind_s) - self.remind_s
            self.remind_s = float(remind_s)
            self._save()

    # -- views -------------------------------------------------------------------------------------------------
    def open_alarms(self, camera: Optional[str] = None) -> list[dict]:
        """The open alarms (of ``camera``), oldest first."""
        with self._lock:
            alarms = sorted(self._alarms.values(), key=lambda a: a.opened_at)
            return [a.view() for a in alarms if camera in (None, a.camera)]

    # -- inside ------------------------------------------------------------------------------------------------
    def _now(self) -> str:
        return utc_iso(self._clock())

    def _send(self, event: AlarmEvent) -> None:
        """Under the lock (so they go out in order)."""
        try:
            self._emit(event)
        except Exception:  # publishing must not leave the desk half-updated
            log.exception("alarm %s: publishing its %s failed", event.alarm_id, event.event)

    def _changed(self) -> None:
        """Under the lock."""
        self._save()
        if self._on_change is not None:
            self._on_change()

    def _save(self) -> None:
        if self._store is None:
            return
        data = json.dumps([asdict(a) for a in self._alarms.values()])
        try:
            self._store.remember(STORE_KEY, data)
        except sqlite3.Error as exc:
            if not self._store_failed:
                log.error("cannot keep the open alarms on disk (%s): they do not survive a restart", exc)
            self._store_failed = True
        else:
            self._store_failed = False

    def _load(self) -> None:
        if self._store is None:
            return
        try:
            raw = self._store.recall(STORE_KEY)
            rows = json.loads(raw) if raw else []
            alarms = [Alarm(**row) for row in rows]
        except (sqlite3.Error, ValueError, TypeError) as exc:
            log.error("the open alarms kept on disk cannot be read (%s): starting without them", exc)
            return
        self._alarms = {a.id: a for a in alarms}
        if alarms:
            log.warning(
                "%d alarm(s) still open from before the restart: %s",
                len(alarms),
                ", ".join(f"{a.kind} {a.id} on camera {a.camera}" for a in alarms),
            )


def clean_by(by: Any) -> str:
    """A command's ``by``: free text, at most BY_MAX characters of one line; ValueError otherwise."""
    if not isinstance(by, str) or not by.strip():
        raise ValueError(f'"by" must be a non-empty string, got {by!r:.80}')
    if len(by) > BY_MAX:
        raise ValueError(f'"by" must be at most {BY_MAX} characters, got {len(by)}')
    if not by.isprintable():
        raise ValueError(f'"by" must be one line of printable text, got {by!r:.80}')
    return by.strip()
