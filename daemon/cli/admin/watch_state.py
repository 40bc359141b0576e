"""The state model behind ``fallwatch watch``: MQTT messages in, a sorted per-device, per-camera view out.

Pure: no MQTT, no clock, no terminal. The caller passes each message with the wall time it arrived and asks
for a snapshot at a given wall time, so the whole model is tested with plain data.

Topics understood, under ``<prefix>`` (``fallwatch``):
- ``<prefix>/<device>/availability|heartbeat|alerts``: the device;
- ``<prefix>/<device>/state|event``: a device with one camera (today's daemon);
- ``<prefix>/<device>/<camera>/state|event``: one camera of a device that watches several.
A device that publishes per-camera topics is shown one row per camera; a device-level ``state``/``event`` it may
publish besides (a summary) is then not shown as a camera of its own.

A device is *down* when its availability is ``offline`` (a clean stop, or its Last Will) or when no heartbeat has
come for 3 heartbeat periods (the period the device states in its heartbeats, else ``stale_after``). A camera
has an *alarm* while its state is ``fall`` or ``person_down``, or while an alarm it raised is open (nobody has
answered it yet: the state's ``alarms``, daemon/alarms/open_alarms.py). Devices with an alarm come first, then down
devices, then the rest, each group by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from fallwatch.rules.events import ALARMS

DEVICE_KINDS = ("availability", "heartbeat", "alerts", "state", "event")
CAMERA_KINDS = ("state", "event")
ALARM_STATES = ALARMS
DEFAULT_STALE_AFTER_S = 90.0  # 3 x the daemon's default heartbeat (30 s), when a device does not say its own
MISSED_HEARTBEATS = 3  # as Home Assistant's expire_after for the heartbeat sensors


def topic_filters(prefix: str) -> list[str]:
    """What to subscribe to, device-level and per-camera."""
    return [f"{prefix}/+/{kind}" for kind in DEVICE_KINDS] + [f"{prefix}/+/+/{kind}" for kind in CAMERA_KINDS]


def parse_topic(prefix: str, topic: str) -> Optional[tuple[str, Optional[str], str]]:
    """(device, camera or None, kind) for a topic this model understands, else None."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) == 2 and parts[0] and parts[1] in DEVICE_KINDS:
        return parts[0], None, parts[1]
    if len(parts) == 3 and parts[0] and parts[1] and parts[2] in CAMERA_KINDS:
        return parts[0], parts[1], parts[2]
    return None


def parse_ts(value: Any) -> Optional[float]:
    """An event's ISO 8601 ``ts`` (``2026-11-23T18:34:50.173Z``) as epoch seconds, None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else None


@dataclass
class CameraView:
    state: Optional[str] = None
    persons: Optional[int] = None
    event: Optional[dict] = None  # the last event: kind, id, ts, camera
    event_at: Optional[float] = None  # when it happened (its ts; else when it arrived)
    alarms: list[dict] = field(default_factory=list)  # open alarms: id, camera, kind, opened, level, acknowledged


@dataclass
class DeviceView:
    availability: Optional[str] = None  # online / offline / None (not known)
    alerts: Optional[str] = None  # ON / OFF / None
    heartbeat: Optional[dict] = None
    heartbeat_at: Optional[float] = None
    cameras: dict[Optional[str], CameraView] = field(default_factory=dict)  # None: the device-level camera


class WatchModel:
    """Feed it messages with ``apply``; read the view with ``snapshot``. Not thread-safe (the caller locks)."""

    def __init__(self, prefix: str = "fallwatch", *, started_at: float, stale_after: float = DEFAULT_STALE_AFTER_S):
        self.prefix = prefix.rstrip("/")
        self.started_at = started_at  # a device never heard from is judged from here on
        self.stale_after = stale_after
        self.devices: dict[str, DeviceView] = {}
        self.ignored = 0  # messages on our topics that could not be read

    def apply(self, topic: str, payload: bytes | bytearray, received_at: float) -> bool:
        """Take one message; False when its topic is not ours or its payload is unreadable."""
        where = parse_topic(self.prefix, topic)
        if where is None:
            return False
        device_id, camera, kind = where
        json_kind = kind in ("heartbeat", "state", "event")
        try:
            text = payload.decode("utf-8").strip()
            doc = json.loads(text) if text and json_kind else None  # an empty retained message clears it
        except (UnicodeDecodeError, ValueError, RecursionError):
            self.ignored += 1
            return False
        if json_kind and text and not isinstance(doc, dict):
            self.ignored += 1
            return False
        data: Optional[dict] = doc
        device = self.devices.setdefault(device_id, DeviceView())
        if kind == "availability":
            device.availability = text or None  # an empty retained message clears it
        elif kind == "alerts":
            device.alerts = text or None
        elif kind == "heartbeat":
            device.heartbeat, device.heartbeat_at = data, received_at
        else:
            view = device.cameras.setdefault(camera, CameraView())
            if kind == "state":
                view.state = _str_or_none(data.get("state")) if data else None
                view.persons = _int_or_none(data.get("persons")) if data else None
                raw = data.get("alarms") if data else None
                view.alarms = [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
            elif data:
                view.event = {
                    "event": _str_or_none(data.get("event")),
                    "id": _str_or_none(data.get("id")),
                    "ts": _str_or_none(data.get("ts")),
                    "camera": _str_or_none(data.get("camera")),
                }
                view.event_at = parse_ts(data.get("ts")) or received_at
        return True

    def snapshot(self, now: float) -> list[dict]:
        """Every device as plain data (JSON-ready), alarms first, then down devices, then the rest."""
        rows = [self._device_row(name, device, now) for name, device in self.devices.items()]
        rows.sort(key=lambda r: (0 if r["alarm"] else 1 if r["down"] else 2, r["device"]))
        return rows

    def _device_row(self, name: str, device: DeviceView, now: float) -> dict:
        hb = device.heartbeat or {}
        period = hb.get("heartbeat_s")
        limit = MISSED_HEARTBEATS * period if isinstance(period, (int, float)) and period > 0 else self.stale_after
        silent_for = now - (device.heartbeat_at if device.heartbeat_at is not None else self.started_at)
        down_reason = None
        if device.availability == "offline":
            down_reason = "offline"
        elif silent_for > limit:
            down_reason = f"no heartbeat for {age_text(silent_for)}"
        named = {k: v for k, v in device.cameras.items() if k is not None}
        cameras = named if named else device.cameras
        camera_rows = [self._camera_row(key, view, now) for key, view in cameras.items()]
        camera_rows.sort(key=lambda r: (not r["alarm"], r["camera"] or ""))
        return {
            "device": name,
            "availability": device.availability,
            "down": down_reason is not None,
            "down_reason": down_reason,
            "alarm": any(c["alarm"] for c in camera_rows),
            "alerts": device.alerts,
            "heartbeat_age_s": _round(now - device.heartbeat_at) if device.heartbeat_at is not None else None,
            "heartbeat_s": period if isinstance(period, (int, float)) else None,
            "version": hb.get("version"),
            "backend": hb.get("backend"),
            "fps": hb.get("fps"),
            "events_queued": hb.get("events_queued"),
            "cameras": camera_rows,
        }

    @staticmethod
    def _camera_row(key: Optional[str], view: CameraView, now: float) -> dict:
        event = view.event or {}
        return {
            # the device-level camera is named by its events, if any came
            "camera": key if key is not None else event.get("camera"),
            "state": view.state,
            "persons": view.persons,
            "alarm": view.state in ALARM_STATES or bool(view.alarms),
            "open_alarms": [
                {k: a.get(k) for k in ("id", "camera", "kind", "opened", "level", "acknowledged")} for a in view.alarms
            ],
            "last_event": event.get("event"),
            "last_event_id": event.get("id"),
            "last_event_ts": event.get("ts"),
            "last_event_age_s": _round(now - view.event_at) if view.event_at is not None else None,
        }


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _round(seconds: float) -> float:
    return round(max(0.0, seconds), 1)


def age_text(seconds: Optional[float]) -> str:
    """A short age for people: ``4 s``, ``12 min``, ``3 h``, ``2 d``; empty when unknown."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} d"
