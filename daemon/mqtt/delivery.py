"""Delivery of events: never lost, in order, each id once in the outbox.

``queue`` commits an event to the SQLite outbox (mqtt/outbox.py) and wakes the sender thread, the only code that
hands events to paho. The sender keeps at most ``WINDOW`` events in flight, in outbox order, and deletes a row
once paho reports it published (PUBACK for QoS 1, PUBCOMP for QoS 2). After a reconnect paho itself re-sends the
unacknowledged in-flight events first; the sender waits for those before sending newer rows, so the order holds
across outages. After a restart everything still in the outbox is sent, in order, with its original ``id`` and
``ts`` (at-least-once; consumers dedupe by ``id``). An event the outbox cannot store (full or read-only disk)
still goes out, straight through paho, without surviving a restart.

Snapshots are best effort: the last few JPEGs are kept in memory and published right after their event, never
written to disk.

Locks: the window (``_inflight``, ``_last_handed``, the resend state) belongs to the client it was handed to, so
it is guarded by the connection's ``lock`` (link/connection.py), held by ``pump`` and by client swaps (``reset``).
``_snap_lock`` guards the snapshots, ``_count_lock`` the counts; ``_refused_mids`` is written by paho's thread
(single dict operations, no lock: ``published`` runs under paho's message lock and must take none of ours).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Optional

import paho.mqtt.client as mqtt
from fallwatch.daemon.mqtt.commands.alerts_switch import AlertsSwitch
from fallwatch.daemon.mqtt.link.client import LOGGER
from fallwatch.daemon.mqtt.link.connection import WINDOW, Connection
from fallwatch.daemon.mqtt.outbox import Outbox
from fallwatch.daemon.mqtt.retained import Retained
from fallwatch.daemon.mqtt.topics import CameraTopics
from fallwatch.daemon.telemetry.jsonsafe import to_json
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(LOGGER)

MAX_SNAPSHOTS = 8  # JPEGs held in memory waiting for their event to be sent
RESEND_WAIT_S = 10.0  # after a reconnect, how long paho's own re-sends may take before we re-send ourselves


class Sender:
    def __init__(
        self, connection: Connection, outbox: Outbox, retained: Retained, topics: CameraTopics, stop: threading.Event
    ):
        self._link = connection
        self._stop = stop
        self._outbox = outbox
        self._retained = retained  # states deferred at a reconnect go out once the old ones are in
        self.topics = topics  # replaced under the connection's lock (SIGHUP)
        self.wake = threading.Event()  # new event, ack, (re)connect
        self._inflight: list[tuple[int, mqtt.MQTTMessageInfo, str]] = []  # (outbox seq, paho's info, event id)
        self._last_handed = 0  # highest outbox seq handed to the current client
        self._reconnected = False
        self._resend_deadline: Optional[float] = None
        self._remove_failed = False  # the outbox refuses deletes (read-only file system): said once
        self._refused_mids: dict[int, str] = {}  # MQTT 5 PUBACKs with a failure reason, by message id
        self._refusals_said: set[str] = set()
        self._snapshots: OrderedDict[int, bytes] = OrderedDict()
        self._snap_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.events_sent = 0
        self.events_suppressed = 0
        self._unknown_cameras: set[str] = set()  # events for a camera not in `cameras`: said once each

    # ------------------------------------------------------------------------------------------ any thread
    def queue(self, kind: Any, event_id: str, data: bytes, snapshot_jpeg: Optional[bytes]) -> None:
        """Store the event durably and wake the sender; should the outbox fail, hand it to paho directly."""
        try:
            seq, dropped = self._outbox.put(event_id, data)
        except sqlite3.Error as exc:
            self._publish_without_outbox(kind, event_id, data, exc)
            return
        if dropped:
            log.warning(
                "outbox full (mqtt.outbox_max=%d): dropped the %d oldest undelivered event(s)",
                self._outbox.max_items,
                dropped,
            )
        if seq is None:
            log.info("event %s is already queued; not queued twice", event_id)
            return
        if snapshot_jpeg and self._link.cfg.snapshots:
            with self._snap_lock:
                self._snapshots[seq] = bytes(snapshot_jpeg)
                while len(self._snapshots) > MAX_SNAPSHOTS:
                    self._snapshots.popitem(last=False)
        log.debug("queued %s event %s as #%d", kind, event_id, seq)
        self.wake.set()

    def stamp(self, event: Mapping[str, Any], camera: Optional[str], device: str, backend: Callable[[], Any]) -> dict:
        """The event as it leaves: the device, its ``camera`` (else the event's own, else the default one; said once
        when it is none of ours), the backend if it names none. Its ``id`` and ``ts`` are its own (rules/events.py
        Event, alarms/alarm_event.py AlarmEvent): ValueError when it has none."""
        missing = [key for key in ("id", "ts") if not event.get(key)]
        if missing:
            raise ValueError(f"an event without {' and '.join(missing)} cannot be published: {dict(event)!r:.120}")
        payload = dict(event)
        payload["device"] = device
        payload["camera"] = camera = camera or payload.get("camera") or self.topics.default_camera
        if not self.topics.known(camera) and camera not in self._unknown_cameras:
            self._unknown_cameras.add(camera)
            log.warning(
                "event for camera %r, which is not among the cameras %s: published on %s all the same",
                camera,
                ", ".join(self.topics.cameras),
                self.topics.event(camera),
            )
        if payload.get("backend") is None:
            payload["backend"] = backend()
        return payload

    def flush(self, within_s: float) -> None:
        """At stop: wake the sender until the broker took every queued event or ``within_s`` passed."""
        deadline = time.monotonic() + within_s
        while self._link.connected and len(self._outbox) and time.monotonic() < deadline:
            self.wake.set()
            time.sleep(0.02)

    def submit(self, payload: dict, snapshot_jpeg: Optional[bytes], alerts: AlertsSwitch) -> None:
        """A stamped event: queued, or while alerts are paused logged and counted, not queued (queued, it would page
        the family with a stale fall when alerts resume); a ``test`` event goes out all the same."""
        kind, event_id = payload.get("event"), str(payload["id"])
        if not self._link.cfg.enabled:
            log.info("event %s %s not published: mqtt.enabled is false", kind, event_id)
        elif not alerts.enabled and kind != "test":
            with self._count_lock:
                self.events_suppressed += 1
            log.warning(
                "alerts paused by MQTT command (until %s): %s event %s logged, not published",
                alerts.resume_at(),
                kind,
                event_id,
            )
        else:
            self.queue(kind, event_id, to_json(payload), snapshot_jpeg)

    def say_backlog(self) -> None:
        if len(self._outbox):
            log.info(
                "outbox %s holds %d undelivered event(s); they go first, in order", self._outbox.path, len(self._outbox)
            )

    def figures(self) -> dict[str, Any]:
        """The delivery part of MqttStats."""
        return {
            "events_sent": self.events_sent,
            "events_queued": len(self._outbox),
            "events_dropped": self._outbox.dropped,
            "events_suppressed": self.events_suppressed,
        }

    def in_flight(self) -> int:
        with self._link.lock:
            return len(self._inflight)

    def set_outbox_max(self, max_items: int) -> None:
        try:
            dropped = self._outbox.set_max(max_items)
        except sqlite3.Error as exc:  # the rest of the reload (and the new connection) still applies
            log.error(
                "mqtt.outbox_max lowered to %d, but the outbox %s cannot drop events (%s); it keeps them",
                max_items,
                self._outbox.path,
                exc,
            )
            return
        if dropped:
            log.warning("mqtt.outbox_max lowered to %d: dropped the %d oldest undelivered event(s)", max_items, dropped)

    def _publish_without_outbox(self, kind: Any, event_id: str, data: bytes, exc: Exception) -> None:
        """The outbox cannot store the event (a full disk, an I/O error): the alert must still go out, so hand
        it to paho directly; paho keeps a QoS 1/2 message in memory until the broker has it, not across a restart."""
        client, qos = self._link.client, self._link.cfg.qos
        topic = self.topics.event(self.topics.camera_of(data))
        info = client.publish(topic, data, qos=qos, retain=False) if client else None
        if info is not None and (
            info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0)
        ):
            log.error(
                "outbox %s cannot store %s event %s (%s): sent without it, lost if the daemon restarts "
                "before the broker has it",
                self._outbox.path,
                kind,
                event_id,
                exc,
            )
        else:
            log.error(
                "outbox %s cannot store %s event %s (%s) and MQTT cannot take it now: event lost",
                self._outbox.path,
                kind,
                event_id,
                exc,
            )

    # ------------------------------------------------------------------------------------------ link hooks
    def reset(self) -> None:
        """Under the connection's lock: the client was swapped or let go, and with it what was in flight."""
        self._inflight = []
        self._last_handed = 0
        self._reconnected = False

    def reconnected(self) -> None:
        self._reconnected = True

    def published(self, mid: int, reason_code: Any) -> None:
        """paho's on_publish, under its message lock: only note a refusal and wake the sender."""
        if not getattr(reason_code, "is_failure", False):
            self._refused_mids.pop(mid, None)  # message ids are reused: forget an older refusal
        else:  # MQTT 5 only: 3.1.1 brokers drop refused messages silently
            self._refused_mids[mid] = str(reason_code)  # before paho marks it published: the sender sees it
            if str(reason_code) not in self._refusals_said:
                self._refusals_said.add(str(reason_code))
                cfg = self._link.cfg
                log.error(
                    "MQTT broker %s:%d refuses messages: %s (check its ACL for %s/#)",
                    cfg.host,
                    cfg.port,
                    reason_code,
                    self._link.prefix,
                )
        self.wake.set()

    # ------------------------------------------------------------------------------------------ the sender thread
    def loop(self) -> None:
        last_failure = None
        while not self._stop.is_set():
            # paho marks a message published just after on_publish wakes us: poll briefly while any are in flight
            self.wake.wait(0.05 if self._inflight and self._link.connected else 0.5)
            self.wake.clear()
            try:
                with self._link.lock:
                    self.pump()
                last_failure = None
            except Exception as exc:
                if repr(exc) != last_failure:  # a lasting failure is logged once, not twice a second
                    log.exception("MQTT sender failed (%s); retrying", exc)
                    last_failure = repr(exc)
                else:
                    log.debug("MQTT sender failed again: %s", exc)
                time.sleep(0.5)

    def pump(self) -> None:
        """Under the connection's lock: reap acknowledged events, then hand the next ones to paho, in outbox order."""
        self._reap()
        client, cfg = self._link.client, self._link.cfg
        if client is None or not self._link.connected:
            return
        self._retained.publish_deferred()
        now = time.monotonic()
        if self._reconnected:
            self._reconnected = False
            if self._inflight and cfg.qos == 0:
                self._resend_from_outbox()  # QoS 0 is not re-sent by paho
            elif self._inflight:
                self._resend_deadline = now + RESEND_WAIT_S
        if self._resend_deadline is not None:
            if self._inflight and now < self._resend_deadline:
                return  # paho is re-sending the older in-flight events; newer ones wait behind them
            if self._inflight:
                log.warning(
                    "MQTT: %d event(s) unacknowledged %gs after reconnecting; sending them again",
                    len(self._inflight),
                    RESEND_WAIT_S,
                )
                self._resend_from_outbox()
            self._resend_deadline = None
        room = WINDOW - len(self._inflight)
        if room > 0:
            self._hand_over(client, room)

    def _reap(self) -> None:
        still = []
        for seq, info, event_id in self._inflight:
            published = info.is_published()  # once: paho's thread may set it between two reads
            refused = self._refused_mids.pop(info.mid, None) if published else None
            if refused is not None:
                log.error(
                    "MQTT broker refused event %s (%s); it stays in the outbox %s and is sent again after a restart",
                    event_id,
                    refused,
                    self._outbox.path,
                )
            elif published:
                try:
                    self._outbox.remove(seq)
                except sqlite3.Error as exc:  # delivered all the same; a restart sends it again (at-least-once)
                    if not self._remove_failed:
                        log.error(
                            "outbox %s: cannot delete delivered events (%s); they are sent again after a restart",
                            self._outbox.path,
                            exc,
                        )
                    self._remove_failed = True
                else:
                    self._remove_failed = False
                with self._count_lock:
                    self.events_sent += 1
            else:
                still.append((seq, info, event_id))
        self._inflight = still

    def _hand_over(self, client: mqtt.Client, room: int) -> None:
        cfg = self._link.cfg
        for seq, event_id, payload in self._outbox.after(self._last_handed, room):
            camera = self.topics.camera_of(payload)
            info = client.publish(self.topics.event(camera), payload, qos=cfg.qos, retain=False)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and cfg.qos > 0
            ):
                log.debug("MQTT publish of event %s deferred: %s", event_id, mqtt.error_string(info.rc))
                break  # not taken by paho: stays in the outbox for the next connection
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                # The link dropped before on_disconnect told us: paho keeps this QoS 1/2 message, sends it on
                # reconnecting and marks it published on its PUBACK, but its is_published() raises for any rc
                # other than success, which would wedge this loop on the event for good (the load test's restart
                # found it). The message *is* queued, so say so.
                info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            self._inflight.append((seq, info, event_id))
            self._last_handed = seq
            log.debug("handed event %s (#%d) to MQTT", event_id, seq)
            with self._snap_lock:
                jpeg = self._snapshots.pop(seq, None)
            if jpeg is not None and cfg.snapshots:
                props = None
                if cfg.protocol == "5":
                    props = Properties(PacketTypes.PUBLISH)
                    props.ContentType = "image/jpeg"
                    props.UserProperty = ("id", event_id)
                client.publish(self.topics.snapshot(camera), jpeg, qos=cfg.qos, retain=False, properties=props)

    def _resend_from_outbox(self) -> None:
        self._last_handed = min(seq for seq, _, _ in self._inflight) - 1
        self._inflight = []
