"""What a late subscriber finds on the broker: each camera's retained ``state`` (on change), the alerts switch on
``<prefix>/alerts``, and Home Assistant discovery (mqtt/homeassistant.py). The retained state of a camera no
longer watched, or of another topic layout, is cleared (an empty retained message), remembered in the store.

``_lock`` guards the states, the client they go to and what was handed to it, so states go out in order: a state
set while the link comes up goes out after the ones published on connecting, never before.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from typing import Optional

import paho.mqtt.client as mqtt
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt import homeassistant as ha
from fallwatch.daemon.mqtt.commands.alerts_switch import AlertsSwitch
from fallwatch.daemon.mqtt.link.client import LOGGER
from fallwatch.daemon.mqtt.link.connection import device_id_of, prefix_of
from fallwatch.daemon.mqtt.outbox import Outbox
from fallwatch.daemon.mqtt.topics import CameraTopics
from fallwatch.daemon.telemetry.jsonsafe import to_json

log = logging.getLogger(LOGGER)


class Retained:
    def __init__(self, store: Outbox, switch: AlertsSwitch, topics: CameraTopics, version: str):
        self._store = store
        self._switch = switch
        self._version = version
        self._discovery = ha.Discovery(store)
        self._lock = threading.Lock()
        self.topics = topics
        self._states: dict[Optional[str], dict] = {}  # by camera (key None with one camera)
        self._info: dict[Optional[str], mqtt.MQTTMessageInfo] = {}  # the last ones handed to this client
        self._deferred = False  # publish the states once those in _info are acknowledged
        self._client: Optional[mqtt.Client] = None  # the connected client states go to; None while down

    def set(self, state: dict, camera: Optional[str]) -> None:
        """Retained ``state`` of ``camera``; published only when it differs from the last one."""
        with self._lock:
            key = self.topics.key(camera)
            if state == self._states.get(key):
                return
            self._states[key] = dict(state)
            if self._client is not None and not self._deferred:
                self._publish_state(self._client, key)

    def published(self) -> bool:
        """The current states are acknowledged by the broker, or there are none to publish."""
        with self._lock:
            return not self._deferred and all(info.is_published() for info in self._info.values())

    def set_topics(self, topics: CameraTopics) -> None:
        """SIGHUP: another layout or set of cameras; the states of cameras gone are not published again."""
        with self._lock:
            self.topics = topics
            keep = set(topics.levels) if topics.levels is not None else {None}
            self._states = {k: v for k, v in self._states.items() if k in keep}
            self._info = {k: v for k, v in self._info.items() if k in keep}

    # ------------------------------------------------------------------------------------------ link hooks
    def attach(self, client: mqtt.Client) -> None:
        """The link is up: states go to ``client`` from now on."""
        with self._lock:
            self._client = client
            if not all(info.is_published() for info in self._info.values()):
                # A state sent on the old connection was never acknowledged: paho re-sends it *after* the
                # connect callback, so the current one published now would be overwritten by it. The sender
                # publishes the current states once the old ones are in (publish_deferred).
                self._deferred = True
            else:
                self._publish_states(client)

    def detach(self, forget: bool = False) -> None:
        """The link is down (``forget``: the client is gone, and with it what was handed to it)."""
        with self._lock:
            self._client = None
            if forget:
                self._info, self._deferred = {}, False

    def publish_deferred(self) -> None:
        with self._lock:
            if self._client is not None and self._deferred and all(i.is_published() for i in self._info.values()):
                self._publish_states(self._client)

    # ------------------------------------------------------------------------------------------ publishing
    def publish(self, client: mqtt.Client, cfg: MqttConfig, state: bool = True) -> None:
        """Discovery, the alerts switch and (``state``) the current states, with stale state topics cleared."""
        self.publish_discovery(client, cfg)
        self.publish_alerts(client, cfg)
        with self._lock:
            self._clear_stale_states(client)
            if state and not self._deferred:
                self._publish_states(client)

    def publish_alerts(self, client: mqtt.Client, cfg: MqttConfig) -> None:
        client.publish(f"{prefix_of(cfg)}/alerts", self._switch.state, qos=1, retain=True)

    def publish_discovery(self, client: mqtt.Client, cfg: MqttConfig) -> None:
        self._discovery.publish(
            client,
            cfg.homeassistant,
            prefix=prefix_of(cfg),
            device_id=device_id_of(cfg),
            version=self._version,
            heartbeat_s=cfg.heartbeat_s,
            commands=cfg.commands,
            cameras=self.topics.levels,
        )

    def follow(self, client: mqtt.Client, old: MqttConfig, new: MqttConfig, cameras_changed: bool) -> None:
        """SIGHUP on a link kept: Home Assistant settings or cameras changed."""
        if new.homeassistant != old.homeassistant:
            ha.Discovery.follow(client, old.homeassistant, new.homeassistant)
        if cameras_changed:
            self.publish(client, new)
        elif new.homeassistant != old.homeassistant or new.heartbeat_s != old.heartbeat_s:
            self.publish_discovery(client, new)

    def _publish_states(self, client: mqtt.Client) -> None:
        """Under _lock."""
        for key in self._states:
            self._publish_state(client, key)
        self._deferred = False

    def _publish_state(self, client: mqtt.Client, key: Optional[str]) -> None:
        """Under _lock."""
        self._info[key] = client.publish(self.topics.state(key), to_json(self._states[key]), qos=1, retain=True)

    def _clear_stale_states(self, client: mqtt.Client) -> None:
        """Under _lock: an empty retained message on state topics an earlier run or configuration used and this
        one does not (remembered in the store), so no watcher shows a camera that is gone."""
        current = self.topics.all_states()
        try:
            earlier = json.loads(self._store.recall("state_topics") or "[]")
        except (sqlite3.Error, ValueError):
            earlier = []
        for topic in earlier if isinstance(earlier, list) else []:
            if isinstance(topic, str) and topic not in current:
                client.publish(topic, b"", qos=1, retain=True)
        if earlier != current:
            try:
                self._store.remember("state_topics", json.dumps(current))
            except sqlite3.Error as exc:
                log.debug("cannot remember the state topics: %s", exc)
