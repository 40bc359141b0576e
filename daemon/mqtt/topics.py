"""Where a camera's events and state go under ``<prefix>`` (pure, no MQTT).

With one camera (the ``camera:`` section): ``<prefix>/event``, ``<prefix>/event/snapshot`` and ``<prefix>/state``.
Told several cameras: ``<prefix>/<camera>/event``, ``<prefix>/<camera>/event/snapshot`` and
``<prefix>/<camera>/state``, the camera's name made topic-safe (its *level*). The device's own topics
(availability, heartbeat, set, alerts) stay ``<prefix>/<name>`` in both cases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Optional


def sanitize_id(raw: str) -> str:
    """Topic- and Home-Assistant-safe: letters, digits, '_' and '-' only (no '/', '+', '#', '.')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw.strip()) or "fallwatch"


def camera_levels(cameras: Optional[Sequence[str]]) -> Optional[dict[str, str]]:
    """Camera name -> its topic level; None for one camera. ValueError when two names would share a level."""
    if cameras is None:
        return None
    levels: dict[str, str] = {}
    for name in cameras:
        level = sanitize_id(name)
        clash = next((other for other, seen in levels.items() if seen == level and other != name), None)
        if clash is not None:
            raise ValueError(
                f"cameras {clash!r} and {name!r} would share the MQTT topics {level}/...: give them "
                "names that differ in letters, digits, '_' or '-'"
            )
        levels[name] = level
    return levels


class CameraTopics:
    def __init__(self, prefix: str, default_camera: str, cameras: Optional[Sequence[str]] = None):
        """``default_camera``: the camera of an event or state that names none."""
        self.prefix = prefix
        self.default_camera = default_camera
        self.given = list(cameras) if cameras is not None else None
        self.levels = camera_levels(cameras)  # None: one camera

    @property
    def cameras(self) -> list[str]:
        return list(self.levels) if self.levels is not None else [self.default_camera]

    def key(self, camera: Optional[str]) -> Optional[str]:
        """Which camera's state this is: None with one camera (there is one state), else the camera's name."""
        return None if self.levels is None else camera or self.default_camera

    def known(self, camera: str) -> bool:
        return self.levels is None or camera in self.levels

    def base(self, camera: Optional[str]) -> str:
        if self.levels is None:
            return self.prefix
        name = camera or self.default_camera
        return f"{self.prefix}/{self.levels.get(name) or sanitize_id(name)}"

    def event(self, camera: Optional[str]) -> str:
        return f"{self.base(camera)}/event"

    def snapshot(self, camera: Optional[str]) -> str:
        return f"{self.base(camera)}/event/snapshot"

    def state(self, camera: Optional[str]) -> str:
        return f"{self.base(camera)}/state"

    def all_states(self) -> list[str]:
        """Every state topic of this layout (what a watcher should find, and nothing else)."""
        return sorted(self.state(name) for name in (self.levels or [None]))

    def camera_of(self, stored_event: bytes) -> Optional[str]:
        """The camera named in an event's JSON (as kept in the outbox), so it goes to its topic after a restart."""
        if self.levels is None:
            return None
        try:
            camera = json.loads(stored_event).get("camera")
        except (ValueError, AttributeError):
            return None
        return camera if isinstance(camera, str) else None
