"""MQTT output: fall events (never lost), heartbeats, availability, state, commands, Home Assistant discovery.

``MqttPublisher`` is the facade the daemon calls: it wires the parts, each read and tested alone, and holds no
logic of its own beyond the alerts gate. link/ (the paho client, TLS, reconnects, the watchdog), delivery.py +
outbox.py (events in order, never lost), retained.py (states, the alerts topic, discovery via homeassistant.py),
commands/ (what comes in; the alerts switch), heartbeat.py (a view of the daemon's one Snapshot), topics.py.
While alerts are paused, events are logged and counted (``events_suppressed``), not queued: queued, they would
page the family with stale falls when alerts resume; a ``test`` command still goes out. Topics: docs/mqtt.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import EllipsisType
from typing import Any, Callable, Optional, Union

import paho.mqtt.client as mqtt
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt import homeassistant as ha
from fallwatch.daemon.mqtt.commands.alerts_switch import AlertsSwitch
from fallwatch.daemon.mqtt.commands.inbox import Actions, Inbox
from fallwatch.daemon.mqtt.commands.parse import Answer
from fallwatch.daemon.mqtt.delivery import Sender
from fallwatch.daemon.mqtt.heartbeat import Heartbeat
from fallwatch.daemon.mqtt.link.client import LOGGER
from fallwatch.daemon.mqtt.link.connection import Connection, Hooks, MqttError, camera_topics, device_id_of, prefix_of
from fallwatch.daemon.mqtt.link.watchdog import Watchdog, Workers
from fallwatch.daemon.mqtt.outbox import Outbox, default_state_dir
from fallwatch.daemon.mqtt.retained import Retained
from fallwatch.daemon.telemetry.builder import SnapshotBuilder
from fallwatch.daemon.telemetry.snapshot import MqttStats
from fallwatch.rules.events import Event

log = logging.getLogger(LOGGER)
__all__ = ["MqttError", "MqttPublisher", "camera_topics"]  # (callers catch MqttError from here)

DEFAULT_PAUSE_MAX_S = 12 * 3600.0


class MqttPublisher:
    def __init__(
        self,
        cfg: MqttConfig,
        *,
        camera: str,
        version: str,
        figures: Optional[SnapshotBuilder] = None,
        on_alerts_changed: Optional[Callable[[bool], None]] = None,
        pause_max_s: float = DEFAULT_PAUSE_MAX_S,
        on_feedback: Optional[Callable[[Any, Any], None]] = None,
        cameras: Optional[Sequence[str]] = None,
        on_answer: Optional[Callable[[Answer], object]] = None,
        outbox: Callable[[MqttConfig], Outbox] = lambda cfg: Outbox(
            default_state_dir(cfg.state_dir) / "outbox.sqlite3", cfg.outbox_max
        ),
    ):
        """``camera``: the camera of events and states that name none. ``cameras``: every camera's name, for a
        daemon with several (per-camera topics and Home Assistant devices); None keeps one camera's topics.
        ``figures``: the daemon's one SnapshotBuilder: the publisher provides its delivery figures to it and sends
        heartbeats as views of it (None: one of its own, with MQTT's figures only). ``on_feedback``, ``on_answer``:
        label an event record, answer an open alarm (raise ValueError naming why not). ``outbox``: makes the event
        store from ``cfg`` (a seam for tests that break the disk)."""
        self.camera, self.version = camera, version
        self._on_alerts_changed = on_alerts_changed
        self._started = False
        self._topics = camera_topics(prefix_of(cfg), camera, cameras)
        self._figures = figures or SnapshotBuilder(version, self._topics.cameras)
        self._figures.provide("mqtt", lambda now: {"mqtt": self.mqtt_stats()})
        self._outbox = outbox(cfg)
        self.outbox_path = self._outbox.path
        self._switch = AlertsSwitch(self._outbox, pause_max_s)
        self._switch.on_turn = self._alerts_turned
        self._stop = threading.Event()
        self._workers = Workers(self._stop)
        self._retained = Retained(self._outbox, self._switch, self._topics, version)
        hooks = Hooks(
            self._linked,
            self._up,
            self._retained.detach,
            self._replaced,
            lambda mid, reason: self._sender.published(mid, reason),  # (made below: the sender needs the link)
            lambda client, msg: self._inbox.on_message(client, msg),
        )
        self.link = Connection(cfg, hooks)  # the paho client and its state (read-only outside; tests break it)
        self._sender = Sender(self.link, self._outbox, self._retained, self._topics, self._stop)
        republish = lambda client: self._retained.publish(client, self.cfg)  # noqa: E731
        actions = Actions(self._switch.turn, self.publish_test_event, republish, on_feedback, on_answer)
        self._inbox = Inbox(self.link, actions)
        fresh = lambda: self._figures.build(time.monotonic(), heavy=True)  # noqa: E731
        self._heartbeat = Heartbeat(self.link, self._switch, fresh, lambda: self.end_expired_pause(), self._stop)

    # ----------------------------------------------------------------------------------------------- figures
    @property
    def cfg(self) -> MqttConfig:
        return self.link.cfg

    @property
    def device_id(self) -> str:
        return device_id_of(self.cfg)

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def listening(self) -> bool:
        """Commands on ``<prefix>/set`` reach us: the broker acknowledged the subscription (SUBACK)."""
        return self.link.listening

    @property
    def alerts_enabled(self) -> bool:
        self.end_expired_pause()
        return self._switch.enabled

    def alerts_resume_at(self) -> Optional[str]:
        """While alerts are paused, when they resume by themselves (UTC, ISO 8601); else None."""
        return self._switch.resume_at()

    def healthy(self) -> bool:
        """False when MQTT is enabled and could not deliver for longer than ``mqtt.watchdog_s``."""
        return self.link.healthy(self._started)

    def mqtt_stats(self) -> MqttStats:
        """The delivery figures (the Snapshot's ``mqtt``), each part's own; ``enabled`` while started."""
        alerts = self.alerts_enabled
        return MqttStats(
            enabled=self._started,
            healthy=self.healthy(),
            alerts=alerts,
            alerts_resume_at=self.alerts_resume_at(),
            **self.link.figures(),
            **self._sender.figures(),
        )

    def stats(self) -> dict[str, Any]:
        """``mqtt_stats`` as JSON, without ``enabled`` (the `fallwatch` tools and tests read it)."""
        return {k: v for k, v in self.mqtt_stats().to_json().items() if k != "enabled"}

    def in_flight(self) -> int:
        """Events handed to the broker and not yet acknowledged (they stay in the outbox until they are)."""
        return self._sender.in_flight()

    def state_published(self) -> bool:
        """The current states are acknowledged by the broker (what a late subscriber now finds), or there are none."""
        return self._retained.published()

    # ----------------------------------------------------------------------------------------------- life
    def start(self) -> None:
        """Non-blocking: a broker that is down now is retried in the background with capped backoff."""
        if self._started:
            return
        self._stop.clear()
        if self.cfg.enabled:
            self.link.connect()  # raises MqttError on settings that can never work
        else:
            log.info("mqtt.enabled is false: events are not published")
        self._started = True
        self._switch.start(self.cfg.commands, self.link.prefix)
        watchdog = Watchdog(self.link, self._workers, self._inbox.limited)
        self._workers.start(
            {"mqtt-sender": self._sender.loop, "mqtt-heartbeat": self._heartbeat.loop, "mqtt-watchdog": watchdog.loop}
        )
        self._sender.say_backlog()

    def stop(self) -> None:
        """Flush what the broker takes within ~1 s, publish availability offline, disconnect. Call it from a normal
        thread, not from a signal handler (it takes the outbox lock). The outbox stays open: an event raised while
        the daemon shuts down is still stored for the next start."""
        if not self._started:
            return
        deadline = time.monotonic() + 1.0
        self._sender.flush(1.0)
        self._stop.set()
        self._sender.wake.set()
        self._heartbeat.wake.set()
        self._workers.join(timeout=2)
        with self.link.lock:
            self.link.disconnect(max(0.2, deadline - time.monotonic()))
        self._started = False
        if len(self._outbox):
            log.info("stopping with %d event(s) in the outbox; they are sent on the next start", len(self._outbox))

    # ----------------------------------------------------------------------------------------------- the daemon's calls
    def publish_event(self, event: dict, snapshot_jpeg: Optional[bytes] = None, camera: Optional[str] = None) -> None:
        """Queue one event durably (on disk when this returns) and have it sent (mqtt/delivery.py).
        ``camera``: whose event it is; else the event's own ``camera``, else the constructor's ``camera``."""
        payload = self._sender.stamp(event, camera, self.device_id, lambda: self._figures.last.backend)
        self.end_expired_pause()
        self._sender.submit(payload, snapshot_jpeg, self._switch)

    def publish_test_event(self) -> None:
        """The ``{"test": true}`` command: a ``test`` event end to end (one per camera)."""
        for name in self._topics.cameras:
            self.publish_event(Event.test(source=name).to_dict(), camera=name)
        log.info("test event queued for %s", ", ".join(self._topics.cameras))

    def set_state(self, state: dict, camera: Optional[str] = None) -> None:
        """Retained ``state`` of ``camera`` (else of the state's own ``camera``, else of the constructor's)."""
        self._retained.set(state, camera or state.get("camera"))

    def set_pause_max(self, pause_max_s: float) -> None:
        """SIGHUP: a new ``alerts.pause_max_s`` (counted from when the pause began)."""
        self._switch.pause_max_s = float(pause_max_s)
        self.end_expired_pause()
        self._heartbeat.wake.set()

    def reconfigure(self, cfg: MqttConfig, *, cameras: Union[Optional[Sequence[str]], EllipsisType] = ...) -> None:
        """SIGHUP: a new ``mqtt:`` section (and ``cameras``, when given); reconnect only when connection settings
        changed. Raises MqttError (and keeps the current connection) when the new settings cannot work at all."""
        given = self._topics.given if isinstance(cameras, EllipsisType) else cameras
        topics = camera_topics(prefix_of(cfg), self.camera, given)
        if cfg.state_dir != self.cfg.state_dir:
            log.warning("mqtt.state_dir changed: takes effect after a restart")

        def apply(old: MqttConfig, kept: Optional[mqtt.Client]) -> None:
            cameras_changed = topics.levels != self._topics.levels
            self._topics = self._sender.topics = topics
            self._retained.set_topics(topics)
            if cfg.outbox_max != old.outbox_max:
                self._sender.set_outbox_max(cfg.outbox_max)
            if kept is not None:
                self._retained.follow(kept, old, cfg, cameras_changed)

        self.link.reconfigure(cfg, self._started, apply)
        self._heartbeat.wake.set()
        self._sender.wake.set()

    def end_expired_pause(self) -> None:
        """An alerts pause that reached alerts.pause_max_s ends (the heartbeat thread asks on each tick)."""
        self._switch.end_if_expired()

    # ----------------------------------------------------------------------------------------------- the parts' hooks
    def _linked(self, client: mqtt.Client) -> None:
        ha.Discovery.subscribe(client, self.cfg.homeassistant)
        self._sender.reconnected()

    def _up(self, client: mqtt.Client) -> None:
        self._retained.attach(client)
        self._retained.publish(client, self.cfg, state=False)
        self._sender.wake.set()
        self._heartbeat.wake.set()

    def _replaced(self) -> None:
        self._sender.reset()
        self._retained.detach(forget=True)

    def _alerts_turned(self, changed: bool) -> None:
        """After each turn of the switch: the retained alerts topic; on a change the heartbeat and the daemon."""
        client = self.link.client
        if client is not None:
            self._retained.publish_alerts(client, self.cfg)
        if not changed:
            return
        self._heartbeat.wake.set()  # the heartbeat says so at once
        if self._on_alerts_changed is not None:
            try:
                self._on_alerts_changed(self._switch.enabled)
            except Exception:
                log.exception("on_alerts_changed callback failed")
