"""MQTT output: fall events (never lost), heartbeats, availability, state, commands, Home Assistant discovery.

Topics under ``<prefix>`` (``mqtt.topic_prefix``, default ``fallwatch/<device_id>``):
``availability`` (``online``/``offline``, retained; Last Will ``offline``), ``event`` (JSON, QoS ``mqtt.qos``),
``event/snapshot`` (JPEG, only with ``mqtt.snapshots``), ``heartbeat`` (JSON every ``mqtt.heartbeat_s``),
``state`` (retained JSON, on change), ``set`` (commands, see mqtt/commands.py) and ``alerts`` (retained
``ON``/``OFF``). Told several cameras (``cameras=[...]``), each camera's ``event``, ``event/snapshot`` and ``state``
move one level down, to ``<prefix>/<camera>/...``; the rest stays with the device. The camera of a queued event
is in its JSON, so it goes to its camera's topic after a restart too (layout: mqtt/topics.py). Home Assistant
discovery: mqtt/homeassistant.py; the alerts switch: mqtt/alerts_switch.py.

Delivery of events: ``publish_event`` commits the event to the SQLite outbox first, then wakes the sender
thread, the only code that hands events to paho. The sender keeps at most ``WINDOW`` events in flight, in outbox
order, and deletes a row once paho reports it published (PUBACK for QoS 1, PUBCOMP for QoS 2). After a reconnect
paho itself re-sends the unacknowledged in-flight events first; the sender waits for those before sending newer
rows, so the order holds across outages. After a restart everything still in the outbox is sent, in order, with
its original ``id`` and ``ts`` (at-least-once; consumers dedupe by ``id``). An event the outbox cannot store
(full or read-only disk) still goes out, straight through paho, without surviving a restart.

Decisions:
- While alerts are paused (``{"alerts": false}``) events are logged and counted (``events_suppressed``) but not
  queued in the outbox: queueing them would page the family with stale falls the moment alerts resume.
  ``<prefix>/state`` still tells the truth. A ``{"test": true}`` command is published even while paused: it is
  an explicit request by the household.
- Snapshots are best effort: kept in memory (the last few) and published right after their event, never written
  to disk, so no image of the home is stored by fallwatch.
- The alerts switch survives restarts (remembered in the outbox database), but a pause never lasts longer than
  ``alerts.pause_max_s`` (default 12 h): then alerts resume by themselves, announced in the log and on
  ``<prefix>/alerts``. Anyone who can publish to ``<prefix>/set`` can pause alerts: protect that topic with broker
  ACLs (README), or set ``mqtt.commands: false`` to take no commands at all (a pause left from before is lifted).

Guards (nothing a broker sends may silence the alarms):
- Every paho callback is wrapped (``guarded``, mqtt/client.py): an exception is logged, never raised into paho's
  network thread, which would end it for good. Topics are read from the raw bytes; a topic that is not UTF-8 is
  refused in one line.
- Incoming messages above ``MAX_MESSAGE_BYTES`` are refused in one line, never parsed. With MQTT 5 the CONNECT
  carries that Maximum Packet Size, so the broker never sends them (mosquitto drops them for us); with MQTT 3.1.1,
  which cannot say it, the client (``CappedClient``) drops their body as it arrives instead of holding it. A
  retained command on ``set`` is cleared (an empty retained message), so it is not applied or read again on every
  reconnect.
- Remote ``feedback`` and ``test`` commands are rate-limited (``COMMAND_LIMITS``), and floods of bad commands
  are logged as one line and a count (telemetry/ratelog.py).
- A watchdog thread restarts the client when paho's network loop has stopped, or when it stayed disconnected
  longer than ``mqtt.watchdog_s``; past that limit ``stats()["healthy"]`` is false, so ``/healthz`` answers 503
  and the systemd status says MQTT is down: an alarm that cannot leave the house is not healthy.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import sqlite3
import ssl
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import EllipsisType
from typing import Any, Callable, Optional, Union

import paho.mqtt.client as mqtt
from fallwatch.config.loader import read_secret
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt import homeassistant as ha
from fallwatch.daemon.mqtt.alerts_switch import AlertsSwitch
from fallwatch.daemon.mqtt.client import MAX_MESSAGE_BYTES, CappedClient, abandon, flush_failures, guarded, loop_alive
from fallwatch.daemon.mqtt.commands import Answer, Command, Feedback, parse_command
from fallwatch.daemon.mqtt.outbox import Outbox, default_state_dir
from fallwatch.daemon.mqtt.topics import CameraTopics, sanitize_id
from fallwatch.daemon.telemetry.jsonsafe import to_json
from fallwatch.daemon.telemetry.ratelog import LogLimiter
from fallwatch.rules.events import Event, utc_now_iso
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

WINDOW = 20  # events in flight at once (also paho's max_inflight_messages)
MAX_SNAPSHOTS = 8  # JPEGs held in memory waiting for their event to be sent
RESEND_WAIT_S = 10.0  # after a reconnect, how long paho's own re-sends may take before we re-send ourselves
CPU_TEMP = Path("/sys/class/thermal/thermal_zone0/temp")
_CONNECTION_KEYS = (
    "enabled",
    "host",
    "port",
    "protocol",
    "device_id",
    "client_id",
    "keepalive",
    "username",
    "password",
    "password_file",
    "tls",
    "topic_prefix",
    "reconnect_max_s",
    "commands",
)
DEFAULT_PAUSE_MAX_S = 12 * 3600.0
# Remote messages that write or send something: at most N per window each (a flood must not churn the event
# records, fill the outbox with test events, or have discovery published again and again); an alerts on/off
# command is never limited.
COMMAND_LIMITS = {"feedback": (10, 60.0), "test": (5, 60.0), "birth": (3, 60.0)}  # birth: Home Assistant's
WATCHDOG_TICK_S = 1.0


class MqttError(Exception):
    """A configuration problem that stops MQTT from ever working (unreadable password file, bad TLS files)."""


def device_id_of(cfg: MqttConfig) -> str:
    return sanitize_id(cfg.device_id or socket.gethostname())


def prefix_of(cfg: MqttConfig) -> str:
    return (cfg.topic_prefix or f"fallwatch/{device_id_of(cfg)}").rstrip("/")


def _password_of(cfg: MqttConfig) -> Optional[str]:
    """The broker password as it is now (a password_file is read afresh); None without a user name."""
    if not cfg.username:
        return None
    try:
        return read_secret(cfg.password, cfg.password_file)
    except OSError as exc:
        raise MqttError(f"mqtt.password_file: cannot read {cfg.password_file}: {exc.strerror}") from None


def camera_topics(prefix: str, camera: str, cameras: Optional[Sequence[str]]) -> CameraTopics:
    try:
        return CameraTopics(prefix, camera, cameras)
    except ValueError as exc:  # two camera names that give the same topic
        raise MqttError(str(exc)) from None


def cpu_temp_c(path: Path = CPU_TEMP) -> Optional[float]:
    """The SoC temperature in °C where the system exposes it (Raspberry Pi does), else None."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


class MqttPublisher:
    def __init__(
        self,
        cfg: MqttConfig,
        *,
        camera: str,
        version: str,
        status: Callable[[], dict],
        on_alerts_changed: Optional[Callable[[bool], None]] = None,
        pause_max_s: float = DEFAULT_PAUSE_MAX_S,
        on_feedback: Optional[Callable[[Any, Any], None]] = None,
        cameras: Optional[Sequence[str]] = None,
        on_answer: Optional[Callable[[Answer], object]] = None,
    ):
        """``camera``: the camera of events and states that name none. ``cameras``: every camera's name, for a
        daemon with several (per-camera topics and Home Assistant devices); None keeps one camera's topics."""
        self.cfg = cfg
        self.camera = camera
        self.version = version
        self._status = status
        self._on_alerts_changed = on_alerts_changed
        self._on_feedback = on_feedback  # labels an event record; raises ValueError naming what was wrong
        self._on_answer = (
            on_answer  # answers an open alarm (daemon/alarms/open_alarms.py); raises ValueError naming why not
        )
        self.device_id = device_id_of(cfg)
        self.prefix = prefix_of(cfg)
        self._topics = camera_topics(self.prefix, camera, cameras)
        self.outbox_path = default_state_dir(cfg.state_dir) / "outbox.sqlite3"
        self._outbox = Outbox(self.outbox_path, cfg.outbox_max)
        self._switch = AlertsSwitch(self._outbox, pause_max_s)

        self._client: Optional[mqtt.Client] = None
        self._password_in_use: Optional[str] = None  # what the current client was given (a file may change)
        self._client_lock = threading.RLock()  # swaps of the client vs. the sender using it
        self._connected = False
        self._listening = False  # the broker acknowledged our <prefix>/set subscription on this connection
        self._set_mid: Optional[int] = None
        self._wake = threading.Event()  # sender: new event, ack, (re)connect
        self._hb_wake = threading.Event()  # heartbeat: connect, reconfigure
        self._stop_evt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._started_at = time.monotonic()

        # Sender state, touched only under _client_lock.
        self._inflight: list[tuple[int, mqtt.MQTTMessageInfo, str]] = []  # (outbox seq, paho's info, event id)
        self._last_handed = 0  # highest outbox seq handed to the current client
        self._reconnected = False
        self._resend_deadline: Optional[float] = None
        self._remove_failed = False  # the outbox refuses deletes (read-only file system): said once
        self._refused_mids: dict[int, str] = {}  # MQTT 5 PUBACKs with a failure reason, by message id
        self._refusals_said: set[str] = set()
        self._snapshots: OrderedDict[int, bytes] = OrderedDict()
        self._snap_lock = threading.Lock()

        # The state of each camera (key None with one camera): its publishing under the lock, so they go out in order
        self._states: dict[Optional[str], dict] = {}
        self._state_lock = threading.Lock()
        self._state_info: dict[Optional[str], mqtt.MQTTMessageInfo] = {}  # the last ones handed to this client
        self._state_deferred = False  # publish the states once those in _state_info are acknowledged
        self._last_error: Optional[str] = None  # log each distinct connection problem once
        self._refused = False  # the last CONNACK was a refusal (its disconnect is expected)
        self._discovery = ha.Discovery(self._outbox)
        self._unknown_cameras: set[str] = set()  # events for a camera not in `cameras`: said once each
        self._count_lock = threading.Lock()
        self._events_sent = 0
        self._events_suppressed = 0

        # Guards and watchdog
        self._limited = LogLimiter(log)  # floods of bad messages: one line and a count
        self._command_times: dict[str, deque[float]] = {
            n: deque(maxlen=most) for n, (most, _) in COMMAND_LIMITS.items()
        }
        self._down_since: Optional[float] = time.monotonic()  # not connected since (None while connected)
        self._restarted_at = 0.0  # when the watchdog last restarted the client
        self._restarts = 0

    # ----------------------------------------------------------------------------------------------- public API
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def listening(self) -> bool:
        """Commands on ``<prefix>/set`` reach us: the broker acknowledged the subscription (SUBACK), not just
        the connection. A command published between CONNACK and SUBACK is not delivered to us."""
        return self._connected and self._listening

    @property
    def cameras(self) -> list[str]:
        return self._topics.cameras

    @property
    def alerts_enabled(self) -> bool:
        self._end_expired_pause()
        return self._switch.enabled

    def alerts_resume_at(self) -> Optional[str]:
        """While alerts are paused, when they resume by themselves (UTC, ISO 8601); else None."""
        return self._switch.resume_at()

    def set_pause_max(self, pause_max_s: float) -> None:
        """SIGHUP: a new ``alerts.pause_max_s`` (counted from when the pause began)."""
        self._switch.pause_max_s = float(pause_max_s)
        self._end_expired_pause()
        self._hb_wake.set()

    def down_s(self) -> Optional[float]:
        """Seconds since MQTT could last deliver (not connected, or the network loop stopped); None while it can."""
        since = self._down_since
        client = self._client
        if since is None and client is not None and not loop_alive(client):
            return 0.0  # the watchdog restarts it within a tick
        return None if since is None else time.monotonic() - since

    def healthy(self) -> bool:
        """False when MQTT is enabled and could not deliver for longer than ``mqtt.watchdog_s``."""
        down = self.down_s() if self.cfg.enabled and self._started else None
        return down is None or down <= self.cfg.watchdog_s

    def stats(self) -> dict:
        down = self.down_s() if self.cfg.enabled else None
        return {
            "connected": self._connected,
            "healthy": self.healthy(),
            "down_s": None if down is None else round(down, 1),
            "down_reason": self._last_error if down is not None else None,
            "restarts": self._restarts,
            "events_sent": self._events_sent,
            "events_queued": len(self._outbox),
            "events_dropped": self._outbox.dropped,
            "events_suppressed": self._events_suppressed,
            "alerts": self.alerts_enabled,
            "alerts_resume_at": self.alerts_resume_at(),
        }

    def in_flight(self) -> int:
        """Events handed to the broker and not yet acknowledged (they stay in the outbox until they are)."""
        with self._client_lock:
            return len(self._inflight)

    def state_published(self) -> bool:
        """The current states are acknowledged by the broker (what a late subscriber now finds), or there are none
        to publish."""
        with self._state_lock:
            return not self._state_deferred and all(info.is_published() for info in self._state_info.values())

    def _end_expired_pause(self) -> None:
        if self._switch.expired():
            self._set_alerts(True, f"the pause reached alerts.pause_max_s ({self._switch.pause_max_s:g} s)")

    def start(self) -> None:
        """Non-blocking: a broker that is down now is retried in the background with capped backoff."""
        if self._started:
            return
        self._stop_evt.clear()
        if self.cfg.enabled:
            self._connect()  # raises MqttError on settings that can never work
        else:
            log.info("mqtt.enabled is false: events are not published")
        self._started = True
        if not self._switch.enabled and not self.cfg.commands:
            self._set_alerts(True, "mqtt.commands is false, so the pause set by an earlier command is lifted")
        self._end_expired_pause()
        if not self._switch.enabled:
            log.warning(
                "alerts are PAUSED by an MQTT command since %s: fall events are only logged, not sent, "
                'until %s (alerts.pause_max_s), or until {"alerts": true} on %s/set',
                datetime.fromtimestamp(self._switch.paused_at, timezone.utc).isoformat(timespec="seconds"),
                self.alerts_resume_at(),
                self.prefix,
            )
        for name, target in (
            ("mqtt-sender", self._sender_loop),
            ("mqtt-heartbeat", self._heartbeat_loop),
            ("mqtt-watchdog", self._watchdog_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        queued = len(self._outbox)
        if queued:
            log.info("outbox %s holds %d undelivered event(s); they go first, in order", self.outbox_path, queued)

    def stop(self) -> None:
        """Flush what the broker takes within ~1 s, publish availability offline, disconnect.

        Call it from a normal thread, not from inside a signal handler (it takes the outbox lock)."""
        if not self._started:
            return
        deadline = time.monotonic() + 1.0
        while self._connected and len(self._outbox) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stop_evt.set()
        self._wake.set()
        self._hb_wake.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []
        with self._client_lock:
            self._disconnect(max(0.2, deadline - time.monotonic()))
        self._started = False
        left = len(self._outbox)
        if left:
            log.info("stopping with %d event(s) in the outbox; they are sent on the next start", left)
        # The outbox stays open: an event raised while the daemon shuts down is still stored for the next start.

    def publish_event(self, event: dict, snapshot_jpeg: Optional[bytes] = None, camera: Optional[str] = None) -> None:
        """Queue one event durably (it is on disk when this returns) and have it sent. Should the outbox fail
        (a full or read-only disk), the event is handed to paho directly rather than dropped, and that is logged.

        ``camera``: whose event it is; else the event's own ``camera``, else the constructor's ``camera``."""
        payload = dict(event)
        payload.setdefault("id", str(uuid.uuid4()))
        payload.setdefault("ts", utc_now_iso())
        payload["device"] = self.device_id
        payload["camera"] = camera or payload.get("camera") or self.camera
        if not self._topics.known(payload["camera"]) and payload["camera"] not in self._unknown_cameras:
            self._unknown_cameras.add(payload["camera"])
            log.warning(
                "event for camera %r, which is not among the cameras %s: published on %s all the same",
                payload["camera"],
                ", ".join(self.cameras),
                self._topics.event(payload["camera"]),
            )
        if payload.get("backend") is None:
            payload["backend"] = self._safe_status().get("backend")
        kind = payload.get("event")
        if not self.cfg.enabled:
            log.info("event %s %s not published: mqtt.enabled is false", kind, payload["id"])
            return
        if not self.alerts_enabled and kind != "test":
            with self._count_lock:
                self._events_suppressed += 1
            log.warning(
                "alerts paused by MQTT command (until %s): %s event %s logged, not published",
                self.alerts_resume_at(),
                kind,
                payload["id"],
            )
            return
        data = to_json(payload)
        try:
            seq, dropped = self._outbox.put(str(payload["id"]), data)
        except sqlite3.Error as exc:
            self._publish_without_outbox(kind, str(payload["id"]), data, exc)
            return
        if dropped:
            log.warning(
                "outbox full (mqtt.outbox_max=%d): dropped the %d oldest undelivered event(s)",
                self._outbox.max_items,
                dropped,
            )
        if seq is None:
            log.info("event %s is already queued; not queued twice", payload["id"])
            return
        if snapshot_jpeg and self.cfg.snapshots:
            with self._snap_lock:
                self._snapshots[seq] = bytes(snapshot_jpeg)
                while len(self._snapshots) > MAX_SNAPSHOTS:
                    self._snapshots.popitem(last=False)
        log.debug("queued %s event %s as #%d", kind, payload["id"], seq)
        self._wake.set()

    def _publish_without_outbox(self, kind: Any, event_id: str, data: bytes, exc: Exception) -> None:
        """The outbox cannot store the event (a full disk, an I/O error): the alert must still go out, so hand
        it to paho directly; paho keeps a QoS 1/2 message in memory until the broker has it, not across a restart."""
        client = self._client
        topic = self._topics.event(self._topics.camera_of(data))
        info = client.publish(topic, data, qos=self.cfg.qos, retain=False) if client else None
        if info is not None and (
            info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            or (info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.cfg.qos > 0)
        ):
            log.error(
                "outbox %s cannot store %s event %s (%s): sent without it, lost if the daemon restarts "
                "before the broker has it",
                self.outbox_path,
                kind,
                event_id,
                exc,
            )
        else:
            log.error(
                "outbox %s cannot store %s event %s (%s) and MQTT cannot take it now: event lost",
                self.outbox_path,
                kind,
                event_id,
                exc,
            )

    def publish_test_event(self) -> None:
        """The ``{"test": true}`` command: a ``test`` event end to end, so a household can check its alerts (with
        several cameras one for each, so every room's automation is checked)."""
        for name in self.cameras:
            self.publish_event(Event.test(source=name).to_dict(), camera=name)
        log.info("test event queued for %s", ", ".join(self.cameras))

    def set_state(self, state: dict, camera: Optional[str] = None) -> None:
        """Retained ``state`` of ``camera`` (else of the state's own ``camera``, else of the constructor's
        ``camera``); published only when it differs from the last one."""
        key = self._topics.key(camera or state.get("camera"))
        with self._state_lock:
            if state == self._states.get(key):
                return
            self._states[key] = dict(state)
            client = self._client
            if client is not None and self._connected and not self._state_deferred:
                self._publish_state(client, key)

    def reconfigure(self, cfg: MqttConfig, *, cameras: Union[Optional[Sequence[str]], EllipsisType] = ...) -> None:
        """SIGHUP: apply a new ``mqtt:`` section (and ``cameras``, when given); reconnect only when connection
        settings changed.

        Raises MqttError (and keeps the current connection) when the new settings cannot work at all.
        """
        old = self.cfg
        topics = camera_topics(
            prefix_of(cfg), self.camera, self._topics.given if isinstance(cameras, EllipsisType) else cameras
        )
        cameras_changed = topics.levels != self._topics.levels
        if cfg.state_dir != old.state_dir:
            log.warning("mqtt.state_dir changed: takes effect after a restart")
        reconnect = any(getattr(cfg, k) != getattr(old, k) for k in _CONNECTION_KEYS)
        password = _password_of(cfg) if cfg.enabled else None
        if cfg.enabled and password != self._password_in_use:
            reconnect = True  # e.g. a rotated secret in the same password_file
        client = None
        if reconnect and self._started and cfg.enabled:
            client = self._build_client(cfg, password)  # fails before we let go of the working connection
        with self._client_lock:
            if reconnect and self._started:
                log.info("mqtt connection settings changed: reconnecting")
                self._disconnect(1.0)
            self.cfg = cfg
            self.device_id = device_id_of(cfg)
            self.prefix = prefix_of(cfg)
            with self._state_lock:  # the states of cameras gone are not published again
                self._topics = topics
                keep = set(topics.levels) if topics.levels is not None else {None}
                self._states = {k: v for k, v in self._states.items() if k in keep}
                self._state_info = {k: v for k, v in self._state_info.items() if k in keep}
            if cfg.outbox_max != old.outbox_max:
                try:
                    dropped = self._outbox.set_max(cfg.outbox_max)
                except sqlite3.Error as exc:  # the rest of the reload (and the new connection) still applies
                    log.error(
                        "mqtt.outbox_max lowered to %d, but the outbox %s cannot drop events (%s); it keeps them",
                        cfg.outbox_max,
                        self.outbox_path,
                        exc,
                    )
                else:
                    if dropped:
                        log.warning(
                            "mqtt.outbox_max lowered to %d: dropped the %d oldest undelivered event(s)",
                            cfg.outbox_max,
                            dropped,
                        )
            current = self._client
            if client is not None:
                self._start_client(client, password)
            elif not reconnect and self._connected and current is not None:
                if cfg.homeassistant != old.homeassistant:
                    ha.Discovery.follow(current, old.homeassistant, cfg.homeassistant)
                if cameras_changed:
                    self._publish_retained(current)
                elif cfg.homeassistant != old.homeassistant or cfg.heartbeat_s != old.heartbeat_s:
                    self._publish_discovery(current)
        self._hb_wake.set()
        self._wake.set()

    # ----------------------------------------------------------------------------------------------- connection
    def _connect(self) -> None:
        password = _password_of(self.cfg)
        self._start_client(self._build_client(self.cfg, password), password)

    def _build_client(self, cfg: MqttConfig, password: Optional[str]) -> mqtt.Client:
        """A configured paho client for ``cfg``; MqttError names the setting when it cannot work."""
        protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
        client_id = cfg.client_id or f"fallwatch-{device_id_of(cfg)}"
        client = CappedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        # Wildcards in the prefixes, a password without a user name, a key without its certificate: the
        # configuration refuses those (config/schema.py). Files can still change after it was checked.
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if cfg.tls.enabled:
            for name in ("ca_certs", "certfile", "keyfile"):
                path = getattr(cfg.tls, name)
                try:
                    if path:
                        Path(path).open("rb").close()
                except OSError as exc:
                    raise MqttError(f"mqtt.tls.{name}: cannot read {path}: {exc.strerror}") from None
            try:
                client.tls_set(
                    ca_certs=cfg.tls.ca_certs,
                    certfile=cfg.tls.certfile,
                    keyfile=cfg.tls.keyfile,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise MqttError(f"mqtt.tls: cannot load the certificates ({exc})") from None
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(f"{prefix_of(cfg)}/availability", ha.NOT_AVAILABLE, qos=1, retain=True)
        client.reconnect_delay_set(1, max(1, int(math.ceil(cfg.reconnect_max_s))))
        client.max_inflight_messages_set(WINDOW)
        client.suppress_exceptions = True  # paho's own guard, behind ours: a callback must never end its loop
        client.on_connect = guarded(self._on_connect)
        client.on_connect_fail = guarded(self._on_connect_fail)
        client.on_disconnect = guarded(self._on_disconnect)
        client.on_publish = guarded(self._on_publish)
        client.on_message = guarded(self._on_message)
        client.on_subscribe = guarded(self._on_subscribe)
        return client

    def _start_client(self, client: mqtt.Client, password: Optional[str]) -> None:
        cfg = self.cfg
        self._password_in_use = password
        self._inflight = []
        self._last_handed = 0
        self._reconnected = False
        self._last_error = None
        with self._state_lock:
            self._state_info, self._state_deferred = {}, False  # the old client's messages are gone
        self._client = client
        self._connected = self._listening = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        props = None
        if cfg.protocol == "5":  # the broker must not send us more than we would take (mosquitto drops it)
            props = Properties(PacketTypes.CONNECT)
            props.MaximumPacketSize = MAX_MESSAGE_BYTES + 1024  # + topic and headers
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive, properties=props)
        client.loop_start()
        log.info(
            "MQTT: connecting to %s:%d (MQTT %s%s) as %s, topics %s/...",
            cfg.host,
            cfg.port,
            cfg.protocol,
            ", TLS" if cfg.tls.enabled else "",
            cfg.client_id or f"fallwatch-{self.device_id}",
            self.prefix,
        )

    def _disconnect(self, timeout: float) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._connected:
            info = client.publish(f"{self.prefix}/availability", ha.NOT_AVAILABLE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self._connected = False
        client.disconnect()
        client.loop_stop()
        self._inflight = []
        self._last_handed = 0

    def _where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def _log_problem(self, message: str, level: int = logging.ERROR) -> None:
        """One clear line per distinct problem; repeats while retrying go to DEBUG."""
        if message != self._last_error:
            log.log(level, "%s; retrying with backoff up to %gs", message, self.cfg.reconnect_max_s)
            self._last_error = message
        else:
            log.debug("%s (still)", message)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if client is not self._client:
            return
        if reason_code.is_failure:
            hint = ""
            if str(reason_code) in ("Not authorized", "Bad user name or password"):
                hint = " (check mqtt.username and mqtt.password / password_file)"
            self._log_problem(f"MQTT broker {self._where()} refused the connection: {reason_code}{hint}")
            self._refused = True
            return
        self._last_error = None
        self._down_since = None
        log.info("MQTT connected to %s", self._where())
        client.publish(f"{self.prefix}/availability", ha.AVAILABLE, qos=1, retain=True)
        self._listening = False
        if self.cfg.commands:
            _, self._set_mid = client.subscribe(f"{self.prefix}/set", qos=1)
        ha.Discovery.subscribe(client, self.cfg.homeassistant)
        self._reconnected = True
        with self._state_lock:
            self._connected = True  # under the lock: a set_state() racing with us publishes after this, in order
            if not all(info.is_published() for info in self._state_info.values()):
                # A state sent on the old connection was never acknowledged: paho re-sends it *after* this
                # callback, so the current one published now would be overwritten by it. The sender publishes
                # the current states once the old ones are in.
                self._state_deferred = True
            else:
                self._publish_states(client)
        self._publish_retained(client, state=False)
        self._wake.set()
        self._hb_wake.set()

    def _publish_retained(self, client: mqtt.Client, state: bool = True) -> None:
        """What a late subscriber must find: discovery, the alerts switch and the current states (the retained
        state of a camera no longer watched, or of another topic layout, is cleared)."""
        self._publish_discovery(client)
        client.publish(f"{self.prefix}/alerts", self._switch.state, qos=1, retain=True)
        with self._state_lock:
            self._clear_stale_states(client)
            if state and not self._state_deferred:
                self._publish_states(client)

    def _publish_states(self, client: mqtt.Client) -> None:
        """Under _state_lock."""
        for key in self._states:
            self._publish_state(client, key)
        self._state_deferred = False

    def _publish_state(self, client: mqtt.Client, key: Optional[str]) -> None:
        """Under _state_lock."""
        self._state_info[key] = client.publish(self._topics.state(key), to_json(self._states[key]), qos=1, retain=True)

    def _clear_stale_states(self, client: mqtt.Client) -> None:
        """Under _state_lock: an empty retained message on state topics an earlier run or configuration used
        and this one does not (remembered in the store), so no watcher shows a camera that is gone."""
        current = self._topics.all_states()
        try:
            earlier = json.loads(self._outbox.recall("state_topics") or "[]")
        except (sqlite3.Error, ValueError):
            earlier = []
        for topic in earlier if isinstance(earlier, list) else []:
            if isinstance(topic, str) and topic not in current:
                client.publish(topic, b"", qos=1, retain=True)
        if earlier != current:
            try:
                self._outbox.remember("state_topics", json.dumps(current))
            except sqlite3.Error as exc:
                log.debug("cannot remember the state topics: %s", exc)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        self._discovery.publish(
            client,
            self.cfg.homeassistant,
            prefix=self.prefix,
            device_id=self.device_id,
            version=self.version,
            heartbeat_s=self.cfg.heartbeat_s,
            commands=self.cfg.commands,
            cameras=self._topics.levels,
        )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if client is self._client and mid == self._set_mid:
            granted = not any(getattr(code, "is_failure", False) for code in reason_codes)
            if not granted:
                log.warning(
                    "MQTT broker %s refused the subscription to %s/set: commands will not arrive "
                    "(check the broker's ACL)",
                    self._where(),
                    self.prefix,
                )
            self._listening = granted

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is not self._client:
            return
        exc = sys.exc_info()[1]  # paho calls this from inside its `except OSError`
        detail = f": {exc}" if exc else ""
        if isinstance(exc, ssl.SSLError):
            self._log_problem(f"MQTT TLS handshake with {self._where()} failed{detail} (check mqtt.tls)")
        else:
            self._log_problem(f"MQTT broker {self._where()} unreachable{detail}", logging.WARNING)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if client is not self._client:
            return
        was, refused = self._connected, self._refused
        self._connected = self._refused = self._listening = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        if was:
            log.warning(
                "MQTT disconnected from %s (%s); events are kept in the outbox until it is back",
                self._where(),
                reason_code,
            )
        elif not refused:  # dropped before any CONNACK: typically a TLS client certificate the broker rejects
            hint = "mqtt.tls certfile/keyfile and the broker's log" if self.cfg.tls.enabled else "the broker's log"
            self._log_problem(
                f"MQTT broker {self._where()} closed the connection before accepting it ({reason_code}; check {hint})"
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Called under paho's message lock: only wake the sender, never take our locks here.
        if not getattr(reason_code, "is_failure", False):
            self._refused_mids.pop(mid, None)  # message ids are reused: forget an older refusal
        else:  # MQTT 5 only: 3.1.1 brokers drop refused messages silently
            self._refused_mids[mid] = str(reason_code)  # before paho marks it published: the sender sees it
            if str(reason_code) not in self._refusals_said:
                self._refusals_said.add(str(reason_code))
                log.error(
                    "MQTT broker %s refuses messages: %s (check its ACL for %s/#)",
                    self._where(),
                    reason_code,
                    self.prefix,
                )
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if client is not self._client:
            return
        raw_topic = bytes(msg._topic)  # msg.topic raises on a topic that is not UTF-8
        topic = raw_topic.decode("utf-8", "replace")
        if topic.encode("utf-8") != raw_topic:
            self._limited.warning("bad topic", "MQTT: ignored a message whose topic is not UTF-8: %.100r", raw_topic)
            return
        size = len(msg.payload)
        if isinstance(client, CappedClient) and client.dropped_size is not None:  # read only in part
            size = client.dropped_size - 2 - len(raw_topic) - (2 if msg.qos else 0)
        if size > MAX_MESSAGE_BYTES:
            self._limited.warning(
                "too large",
                "MQTT: ignored a message of %d bytes on %s (more than %d): not read",
                size,
                topic,
                MAX_MESSAGE_BYTES,
            )
            msg.payload = b""  # let it go now, not when paho is done with the message
            if msg.retain and topic == f"{self.prefix}/set":
                self._clear_retained_command(client, topic)
            return
        if topic == f"{self.prefix}/set" and self.cfg.commands:
            self._handle_command(client, msg, topic)
        elif ha.Discovery.is_birth(self.cfg.homeassistant, msg):  # msg.topic is safe now: it is UTF-8
            if self._within_limit("birth"):
                log.info("Home Assistant is back online: publishing discovery again")
                self._publish_retained(client)
            else:
                self._limited.warning(
                    "birth limit",
                    "Home Assistant said online more than %d times in %g s: ignored",
                    *COMMAND_LIMITS["birth"],
                )

    def _handle_command(self, client: mqtt.Client, msg: mqtt.MQTTMessage, topic: str) -> None:
        if msg.retain:
            self._clear_retained_command(client, topic)
            return
        if not msg.payload:  # how a retained command is cleared (by us or anyone): nothing to do
            return
        command = parse_command(bytes(msg.payload))
        if isinstance(command, str):
            self._limited.warning("bad command", "ignored command on %s: %s", topic, command)
            return
        self._apply(command, topic)

    def _clear_retained_command(self, client: mqtt.Client, topic: str) -> None:
        """A retained command would be applied again on every reconnect, and a huge one read again each time: it
        is ignored and cleared (an empty retained message; a broker ACL that forbids it keeps it, then it is only
        ignored, logged once a minute at most)."""
        self._limited.warning(
            "retained command",
            "ignored a retained command on %s (commands must not be retained); clearing it on the broker",
            topic,
        )
        client.publish(topic, b"", qos=1, retain=True)

    def _within_limit(self, name: str) -> bool:
        """The ``name`` command (feedback, test) is within ``COMMAND_LIMITS``; counts it when it is."""
        most, window_s = COMMAND_LIMITS[name]
        times = self._command_times[name]
        now = time.monotonic()
        if len(times) == most and now - times[0] < window_s:
            return False
        times.append(now)
        return True

    def _apply(self, command: Command, topic: str) -> None:
        for problem in command.problems:
            self._limited.warning("bad command", "ignored command on %s: %s", topic, problem)
        if command.feedback is not None:
            if self._within_limit("feedback"):
                self._feedback(topic, command.feedback)
            else:
                self._limited.warning(
                    "feedback limit",
                    "ignored feedback on %s: more than %d in %g s",
                    topic,
                    *COMMAND_LIMITS["feedback"],
                )
        if command.answer is not None:
            self._answer(topic, command.answer)
        if command.alerts is not None:
            self._set_alerts(command.alerts, "by MQTT command")
        if command.test:
            if self._within_limit("test"):
                self.publish_test_event()
            else:
                self._limited.warning(
                    "test limit", "ignored a test command on %s: more than %d in %g s", topic, *COMMAND_LIMITS["test"]
                )

    def _feedback(self, topic: str, feedback: Feedback) -> None:
        """Label an event record (``{"feedback": {"id": ..., "label": ...}}``)."""
        if self._on_feedback is None:
            self._limited.warning(
                "bad feedback", "ignored feedback on %s: this daemon keeps no event records to label", topic
            )
            return
        try:
            self._on_feedback(feedback.event_id, feedback.label)
        except ValueError as exc:
            self._limited.warning("bad feedback", "ignored feedback on %s: %s", topic, exc)
        except OSError as exc:
            self._limited.warning(
                "bad feedback", "ignored feedback on %s: the record cannot be written (%s)", topic, exc.strerror or exc
            )

    def _answer(self, topic: str, answer: Answer) -> None:
        """``{"ack": ...}`` / ``{"false_alarm": ...}``: close open alarms (logged there, with who answered)."""
        log.info("command on %s: %s %s by %s", topic, answer.reason, answer.target, answer.by)
        if self._on_answer is None:
            self._limited.warning("bad answer", "ignored %s on %s: this daemon keeps no alarms", answer.reason, topic)
            return
        try:
            self._on_answer(answer)
        except ValueError as exc:
            self._limited.warning("bad answer", "ignored %s on %s: %s", answer.reason, topic, exc)

    def _set_alerts(self, enabled: bool, why: str) -> None:
        changed = self._switch.set(enabled)
        client = self._client
        if client is not None:
            client.publish(f"{self.prefix}/alerts", self._switch.state, qos=1, retain=True)
        if changed:
            if enabled:
                log.warning("alerts resumed: %s", why)
            else:
                log.warning(
                    "alerts PAUSED %s: fall events are only logged until %s (alerts.pause_max_s) or until resumed",
                    why,
                    self.alerts_resume_at(),
                )
            self._hb_wake.set()  # the heartbeat says so at once
            if self._on_alerts_changed is not None:
                try:
                    self._on_alerts_changed(enabled)
                except Exception:
                    log.exception("on_alerts_changed callback failed")

    # ----------------------------------------------------------------------------------------------- threads
    def _sender_loop(self) -> None:
        last_failure = None
        while not self._stop_evt.is_set():
            # paho marks a message published just after on_publish wakes us: poll briefly while any are in flight
            self._wake.wait(0.05 if self._inflight and self._connected else 0.5)
            self._wake.clear()
            try:
                with self._client_lock:
                    self._pump()
                last_failure = None
            except Exception as exc:
                if repr(exc) != last_failure:  # a lasting failure is logged once, not twice a second
                    log.exception("MQTT sender failed (%s); retrying", exc)
                    last_failure = repr(exc)
                else:
                    log.debug("MQTT sender failed again: %s", exc)
                time.sleep(0.5)

    def _pump(self) -> None:
        """Under _client_lock: reap acknowledged events, then hand the next ones to paho, in outbox order."""
        still = []
        for seq, info, event_id in self._inflight:
            published = info.is_published()  # once: paho's thread may set it between two reads
            refused = self._refused_mids.pop(info.mid, None) if published else None
            if refused is not None:
                log.error(
                    "MQTT broker refused event %s (%s); it stays in the outbox %s and is sent again after a restart",
                    event_id,
                    refused,
                    self.outbox_path,
                )
            elif published:
                try:
                    self._outbox.remove(seq)
                except sqlite3.Error as exc:  # delivered all the same; a restart sends it again (at-least-once)
                    if not self._remove_failed:
                        log.error(
                            "outbox %s: cannot delete delivered events (%s); they are sent again after a restart",
                            self.outbox_path,
                            exc,
                        )
                    self._remove_failed = True
                else:
                    self._remove_failed = False
                with self._count_lock:
                    self._events_sent += 1
            else:
                still.append((seq, info, event_id))
        self._inflight = still
        client = self._client
        if client is None or not self._connected:
            return
        with self._state_lock:
            if self._state_deferred and all(info.is_published() for info in self._state_info.values()):
                self._publish_states(client)
        now = time.monotonic()
        if self._reconnected:
            self._reconnected = False
            if self._inflight and self.cfg.qos == 0:
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
        if room <= 0:
            return
        for seq, event_id, payload in self._outbox.after(self._last_handed, room):
            camera = self._topics.camera_of(payload)
            info = client.publish(self._topics.event(camera), payload, qos=self.cfg.qos, retain=False)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.cfg.qos > 0
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
            if jpeg is not None and self.cfg.snapshots:
                props = None
                if self.cfg.protocol == "5":
                    props = Properties(PacketTypes.PUBLISH)
                    props.ContentType = "image/jpeg"
                    props.UserProperty = ("id", event_id)
                client.publish(self._topics.snapshot(camera), jpeg, qos=self.cfg.qos, retain=False, properties=props)

    def _resend_from_outbox(self) -> None:
        self._last_handed = min(seq for seq, _, _ in self._inflight) - 1
        self._inflight = []

    def _watchdog_loop(self) -> None:
        while not self._stop_evt.wait(WATCHDOG_TICK_S):
            self._limited.flush()
            flush_failures()
            try:
                self._watch()
                self._revive_workers()
            except Exception:
                self._limited.log(logging.ERROR, "watchdog", "MQTT watchdog failed", exc_info=True)

    def _revive_workers(self) -> None:
        """The sender and heartbeat threads catch their own failures; should one end all the same, start it again."""
        targets = {"mqtt-sender": self._sender_loop, "mqtt-heartbeat": self._heartbeat_loop}
        for i, thread in enumerate(self._threads):
            if thread.name in targets and not thread.is_alive() and not self._stop_evt.is_set():
                log.error("MQTT watchdog: the %s thread ended; starting it again", thread.name)
                self._threads[i] = threading.Thread(target=targets[thread.name], name=thread.name, daemon=True)
                self._threads[i].start()

    def _watch(self) -> None:
        """Restart the client when its network loop stopped, or when it stayed disconnected past
        ``mqtt.watchdog_s`` (then again every ``watchdog_s`` while it stays so)."""
        with self._client_lock:
            client = self._client
            if client is None or not self.cfg.enabled or self._stop_evt.is_set():
                return
            now = time.monotonic()
            limit = self.cfg.watchdog_s
            if not loop_alive(client):
                why = "its network loop stopped"
            elif self._down_since is not None and now - max(self._down_since, self._restarted_at) > limit:
                why = (
                    f"disconnected for {now - self._down_since:.0f} s (mqtt.watchdog_s: {limit:g}); "
                    "/healthz and the systemd status say MQTT is down"
                )
            else:
                return
            self._restarted_at = now
            try:
                password = _password_of(self.cfg)
                fresh = self._build_client(self.cfg, password)
            except MqttError as exc:
                self._limited.error("watchdog", "MQTT watchdog cannot restart the client: %s", exc)
                return
            log.error("MQTT watchdog: restarting the client, %s", why)
            self._client = None
            abandon(client)
            self._restarts += 1
            self._start_client(fresh, password)

    def _heartbeat_loop(self) -> None:
        # The first heartbeat goes out when the connection is made (on_connect wakes us), not also at start.
        next_at = time.monotonic() + self.cfg.heartbeat_s
        while not self._stop_evt.is_set():
            timeout = max(0.0, next_at - time.monotonic())
            left = self._switch.left_s()
            if left is not None and left < timeout:  # wake when a pause ends, to announce it
                timeout = left + 0.01
            if self._hb_wake.wait(timeout):
                self._hb_wake.clear()
                if self._stop_evt.is_set():
                    return
                next_at = time.monotonic()  # (re)connected or reconfigured: one now, then the cadence
            self._end_expired_pause()
            if time.monotonic() < next_at:
                continue  # woken for the pause's end only
            client = self._client
            if client is not None and self._connected:
                try:
                    client.publish(f"{self.prefix}/heartbeat", to_json(self.heartbeat()), qos=0, retain=False)
                except Exception:
                    log.exception("MQTT heartbeat failed")
            # a steady cadence (no drift by the time a heartbeat takes); after a stall or a wake-up, start afresh
            now = time.monotonic()
            next_at = (
                next_at + self.cfg.heartbeat_s if next_at + self.cfg.heartbeat_s > now else now + self.cfg.heartbeat_s
            )

    def heartbeat(self) -> dict:
        st = self._safe_status()
        stats = self.stats()
        # st: the daemon's view of its figures (snapshot.heartbeat()); the outbox figures are this thread's own
        return {
            "ts": utc_now_iso(),
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "heartbeat_s": self.cfg.heartbeat_s,  # so a watcher can tell a late heartbeat from a slow cadence
            "version": self.version,
            "device": self.device_id,
            **dict.fromkeys(
                ("backend", "backend_reason", "camera", "fps", "persons", "state", "dropped_frames", "labelled")
            ),
            **st,
            "events_sent": stats["events_sent"],
            "events_queued": stats["events_queued"],
            "events_dropped": stats["events_dropped"],
            "events_suppressed": stats["events_suppressed"],
            "cpu_temp_c": cpu_temp_c(),
            "alerts": stats["alerts"],
            "alerts_resume_at": stats["alerts_resume_at"],
        }

    def _safe_status(self) -> dict:
        try:
            st = self._status()
            return st if isinstance(st, dict) else {}
        except Exception as exc:  # the daemon's figures must not stop an alert going out
            log.debug("status() failed: %s", exc)
            return {}
