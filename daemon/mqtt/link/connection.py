"""The connection to the broker: one paho client at a time, built from ``mqtt:`` (TLS, credentials, Last Will),
connected in the background with capped backoff, and what is known of its link (connected, listening, down since).

The parts that use the link are told of it by ``Hooks``: ``linked`` once the broker accepted us (before the link
counts as connected), ``up`` right after, ``down`` when it drops, ``replaced`` when the client is swapped or let go,
and paho's ``published`` and ``message``. Every paho callback is ``guarded`` (link/client.py).

``lock`` (an RLock) is held to swap the client, and by whoever hands messages to it (the sender): nothing is
handed to a client being replaced, and what was handed belongs to the client it was handed to.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from fallwatch.config.loader import read_secret
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt import homeassistant as ha
from fallwatch.daemon.mqtt.link.client import LOGGER, MAX_MESSAGE_BYTES, CappedClient, abandon, guarded, loop_alive
from fallwatch.daemon.mqtt.topics import CameraTopics, sanitize_id
from fallwatch.daemon.telemetry.ratelog import LogLimiter
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(LOGGER)

WINDOW = 20  # events in flight at once (also paho's max_inflight_messages)
# What needs a new client when it changes on SIGHUP (the rest applies to the one connected)
CONNECTION_KEYS = (
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


class MqttError(Exception):
    """A configuration problem that stops MQTT from ever working (unreadable password file, bad TLS files)."""


def device_id_of(cfg: MqttConfig) -> str:
    return sanitize_id(cfg.device_id or socket.gethostname())


def prefix_of(cfg: MqttConfig) -> str:
    return (cfg.topic_prefix or f"fallwatch/{device_id_of(cfg)}").rstrip("/")


def camera_topics(prefix: str, camera: str, cameras: Optional[Sequence[str]]) -> CameraTopics:
    try:
        return CameraTopics(prefix, camera, cameras)
    except ValueError as exc:  # two camera names that give the same topic
        raise MqttError(str(exc)) from None


def password_of(cfg: MqttConfig) -> Optional[str]:
    """The broker password as it is now (a password_file is read afresh); None without a user name."""
    if not cfg.username:
        return None
    try:
        return read_secret(cfg.password, cfg.password_file)
    except OSError as exc:
        raise MqttError(f"mqtt.password_file: cannot read {cfg.password_file}: {exc.strerror}") from None


@dataclass(frozen=True)
class Hooks:
    linked: Callable[[mqtt.Client], None]
    up: Callable[[mqtt.Client], None]
    down: Callable[[], None]
    replaced: Callable[[], None]
    published: Callable[[int, Any], None]  # paho's network thread, under its message lock: take none of ours
    message: Callable[[mqtt.Client, mqtt.MQTTMessage], None]


class Connection:
    def __init__(self, cfg: MqttConfig, hooks: Hooks):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.client: Optional[mqtt.Client] = None
        self.connected = False
        self._listening = False  # the broker acknowledged our <prefix>/set subscription on this connection
        self._set_mid: Optional[int] = None
        self._hooks = hooks
        self._password_in_use: Optional[str] = None  # what the current client was given (a file may change)
        self.last_error: Optional[str] = None  # each distinct connection problem is logged once
        self._refused = False  # the last CONNACK was a refusal (its disconnect is expected)
        self.down_since: Optional[float] = time.monotonic()  # not connected since (None while connected)
        self._restarted_at = 0.0  # when the watchdog last restarted the client
        self._down_restarts = 0  # restarts since the link was last up: each waits twice as long (a slow broker)
        self.restarts = 0

    @property
    def prefix(self) -> str:
        return prefix_of(self.cfg)

    @property
    def listening(self) -> bool:
        return self.connected and self._listening

    def down_s(self) -> Optional[float]:
        """Seconds since MQTT could last deliver (not connected, or the network loop stopped); None while it can."""
        since, client = self.down_since, self.client
        if since is None and client is not None and not loop_alive(client):
            return 0.0  # the watchdog restarts it within a tick
        return None if since is None else time.monotonic() - since

    def healthy(self, started: bool) -> bool:
        """False when MQTT is enabled, started, and could not deliver for longer than ``mqtt.watchdog_s``."""
        down = self.down_s() if self.cfg.enabled and started else None
        return down is None or down <= self.cfg.watchdog_s

    def figures(self) -> dict[str, Any]:
        """The link's part of MqttStats: connected, for how long not, why, restarts by the watchdog."""
        down = self.down_s() if self.cfg.enabled else None
        return {
            "connected": self.connected,
            "down_s": None if down is None else round(down, 1),
            "down_reason": self.last_error if down is not None else None,
            "restarts": self.restarts,
        }

    # ------------------------------------------------------------------------------------------ client lifecycle
    def connect(self) -> None:
        """Raises MqttError on settings that can never work."""
        password = password_of(self.cfg)
        self.start_client(self.build_client(self.cfg, password), password)

    def needs_new_client(self, cfg: MqttConfig) -> tuple[bool, Optional[str]]:
        """Whether ``cfg`` needs a new client (a connection setting or the password changed), and the password."""
        renew = any(getattr(cfg, k) != getattr(self.cfg, k) for k in CONNECTION_KEYS)
        password = password_of(cfg) if cfg.enabled else None
        return renew or (cfg.enabled and password != self._password_in_use), password

    def build_client(self, cfg: MqttConfig, password: Optional[str]) -> mqtt.Client:
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

    def reconfigure(
        self, cfg: MqttConfig, started: bool, apply: Callable[[MqttConfig, Optional[mqtt.Client]], None]
    ) -> None:
        """SIGHUP: take ``cfg``; a new client only when a connection setting (or the password) changed, built before
        the working one is let go (MqttError keeps it). ``apply(old, kept)`` runs under ``lock`` once ``cfg`` is
        in: the rest of the reload, with the client kept when it stays connected (else None)."""
        renew, password = self.needs_new_client(cfg)
        fresh = self.build_client(cfg, password) if renew and started and cfg.enabled else None
        with self.lock:
            if renew and started:
                log.info("mqtt connection settings changed: reconnecting")
                self.disconnect(1.0)
            old, self.cfg = self.cfg, cfg
            apply(old, self.client if not renew and self.connected else None)
            if fresh is not None:
                self.start_client(fresh, password)

    def start_client(self, client: mqtt.Client, password: Optional[str]) -> None:
        """Under ``lock`` (or before any thread runs): make ``client`` the one, connecting in the background."""
        cfg = self.cfg
        self._password_in_use = password
        self.last_error = None
        self._hooks.replaced()  # the old client's messages are gone
        self.client = client
        self.connected = self._listening = False
        if self.down_since is None:
            self.down_since = time.monotonic()
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
            cfg.client_id or f"fallwatch-{device_id_of(cfg)}",
            self.prefix,
        )

    def disconnect(self, timeout: float) -> None:
        """Under ``lock``: availability offline (waiting up to ``timeout`` for the broker to have it), then let go."""
        client, self.client = self.client, None
        if client is None:
            return
        if self.connected:
            info = client.publish(f"{self.prefix}/availability", ha.NOT_AVAILABLE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.connected = False
        client.disconnect()
        client.loop_stop()
        self._hooks.replaced()

    def watch(self, limited: LogLimiter) -> None:
        """The watchdog's tick: restart the client when its network loop stopped, or when it stayed disconnected
        past ``mqtt.watchdog_s`` (then again after twice as long each time while it stays so, up to 16
        ``watchdog_s``: a broker slower to answer than the limit still gets the time to)."""
        with self.lock:
            client = self.client
            if client is None or not self.cfg.enabled:
                return
            now = time.monotonic()
            limit = self.cfg.watchdog_s
            if not loop_alive(client):
                why = "its network loop stopped"
            elif self.down_since is not None and now - max(self.down_since, self._restarted_at) > limit * (
                2 ** min(self._down_restarts, 4)
            ):
                why = (
                    f"disconnected for {now - self.down_since:.0f} s (mqtt.watchdog_s: {limit:g}); "
                    "/healthz and the systemd status say MQTT is down"
                )
            else:
                return
            self._restarted_at = now
            self._down_restarts += 1
            try:
                password = password_of(self.cfg)
                fresh = self.build_client(self.cfg, password)
            except MqttError as exc:
                limited.error("watchdog", "MQTT watchdog cannot restart the client: %s", exc)
                return
            log.error("MQTT watchdog: restarting the client, %s", why)
            self.client = None
            abandon(client)
            self.restarts += 1
            self.start_client(fresh, password)

    # ------------------------------------------------------------------------------------------ paho callbacks
    def _where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def _log_problem(self, message: str, level: int = logging.ERROR) -> None:
        """One clear line per distinct problem; repeats while retrying go to DEBUG."""
        if message != self.last_error:
            log.log(level, "%s; retrying with backoff up to %gs", message, self.cfg.reconnect_max_s)
            self.last_error = message
        else:
            log.debug("%s (still)", message)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if client is not self.client:
            return
        if reason_code.is_failure:
            hint = ""
            if str(reason_code) in ("Not authorized", "Bad user name or password"):
                hint = " (check mqtt.username and mqtt.password / password_file)"
            self._log_problem(f"MQTT broker {self._where()} refused the connection: {reason_code}{hint}")
            self._refused = True
            return
        self.last_error = None
        self.down_since = None
        self._down_restarts = 0
        log.info("MQTT connected to %s", self._where())
        client.publish(f"{self.prefix}/availability", ha.AVAILABLE, qos=1, retain=True)
        self._listening = False
        if self.cfg.commands:
            _, self._set_mid = client.subscribe(f"{self.prefix}/set", qos=1)
        self._hooks.linked(client)
        self.connected = True
        self._hooks.up(client)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if client is self.client and mid == self._set_mid:
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
        if client is not self.client:
            return
        exc = sys.exc_info()[1]  # paho calls this from inside its `except OSError`
        detail = f": {exc}" if exc else ""
        if isinstance(exc, ssl.SSLError):
            self._log_problem(f"MQTT TLS handshake with {self._where()} failed{detail} (check mqtt.tls)")
        else:
            self._log_problem(f"MQTT broker {self._where()} unreachable{detail}", logging.WARNING)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if client is not self.client:
            return
        was, refused = self.connected, self._refused
        self.connected = self._refused = self._listening = False
        self._hooks.down()
        if self.down_since is None:
            self.down_since = time.monotonic()
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
        self._hooks.published(mid, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if client is self.client:
            self._hooks.message(client, msg)
