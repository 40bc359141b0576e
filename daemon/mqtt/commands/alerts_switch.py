"""The alerts switch: fall events sent (on) or only logged (paused), remembered across restarts.

A pause never outlasts ``pause_max_s``, counted on the wall clock from when it began (so it outlives restarts),
and never more than ``pause_max_s`` from now, should the clock have been set back. Telling anyone about a change
(MQTT, the debug page) is the caller's part, through ``on_turn`` (mqtt/publisher.py wires it); ``turn`` says it
in the log.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Optional

from fallwatch.daemon.mqtt.homeassistant import ALERTS_OFF, ALERTS_ON
from fallwatch.daemon.mqtt.link.client import LOGGER
from fallwatch.daemon.mqtt.outbox import Outbox

log = logging.getLogger(LOGGER)  # what the user reads of MQTT, in one place


class AlertsSwitch:
    def __init__(self, store: Outbox, pause_max_s: float):
        self._store = store
        self.on_turn: Callable[[bool], None] = lambda changed: None  # after each ``turn``: whether it changed
        self._lock = threading.RLock()
        self.pause_max_s = float(pause_max_s)
        self.enabled = store.recall("alerts") != ALERTS_OFF
        self.paused_at = time.time()  # wall clock, remembered
        if not self.enabled:
            try:
                self.paused_at = float(store.recall("alerts_paused_at") or "nan")
            except ValueError:
                self.paused_at = float("nan")
            if not math.isfinite(self.paused_at):
                self.paused_at = time.time()  # a pause from a version that did not record its start

    @property
    def state(self) -> str:
        """``ON``/``OFF``, as published on ``<prefix>/alerts``."""
        return ALERTS_ON if self.enabled else ALERTS_OFF

    def set(self, enabled: bool) -> bool:
        """Switch and remember it; True when that changed anything. A store that cannot write is logged: the
        switch then holds until a restart."""
        with self._lock:
            changed = enabled != self.enabled
            self.enabled = enabled
            if changed and not enabled:
                self.paused_at = time.time()
            try:
                if changed and not enabled:
                    self._store.remember("alerts_paused_at", repr(self.paused_at))
                self._store.remember("alerts", self.state)
            except sqlite3.Error as exc:
                log.error(
                    "outbox %s cannot remember the alerts switch (%s): it holds until a restart", self._store.path, exc
                )
        return changed

    def turn(self, enabled: bool, why: str) -> bool:
        """``set``, saying in the log why it changed; True when it did."""
        changed = self.set(enabled)
        if changed and enabled:
            log.warning("alerts resumed: %s", why)
        elif changed:
            log.warning(
                "alerts PAUSED %s: fall events are only logged until %s (alerts.pause_max_s) or until resumed",
                why,
                self.resume_at(),
            )
        self.on_turn(changed)
        return changed

    def end_if_expired(self) -> None:
        """A pause that reached pause_max_s ends (the heartbeat thread asks on each tick)."""
        if self.expired():
            self.turn(True, f"the pause reached alerts.pause_max_s ({self.pause_max_s:g} s)")

    def start(self, commands: bool, prefix: str) -> None:
        """At start: a pause left from before holds only while a command can lift it; else say until when."""
        if not self.enabled and not commands:
            self.turn(True, "mqtt.commands is false, so the pause set by an earlier command is lifted")
        self.end_if_expired()
        if not self.enabled:
            log.warning(
                "alerts are PAUSED by an MQTT command since %s: fall events are only logged, not sent, "
                'until %s (alerts.pause_max_s), or until {"alerts": true} on %s/set',
                datetime.fromtimestamp(self.paused_at, timezone.utc).isoformat(timespec="seconds"),
                self.resume_at(),
                prefix,
            )

    def left_s(self) -> Optional[float]:
        """Seconds until a pause ends; None while alerts are on."""
        with self._lock:
            if self.enabled:
                return None
            return min(max(0.0, self.paused_at + self.pause_max_s - time.time()), self.pause_max_s)

    def expired(self) -> bool:
        left = self.left_s()
        return left is not None and left <= 0

    def resume_at(self) -> Optional[str]:
        """While paused, when alerts resume by themselves (UTC, ISO 8601); else None."""
        left = self.left_s()
        if left is None:
            return None
        return (
            datetime.fromtimestamp(time.time() + left, timezone.utc)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
