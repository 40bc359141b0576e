"""Home Assistant MQTT discovery for one fallwatch device: the payloads (pure) and their publishing (``Discovery``).

Entities, all tied to ``<prefix>/availability``:
- binary_sensor ``fall``: on while the state is ``fall`` or ``person_down`` (from the retained ``state``)
- binary_sensor ``person_down``: on while someone has stayed down (a "long lie")
- sensor ``persons``: persons in view (from ``state``)
- event ``alert``: fires on each event on ``event`` (event types fall, person_down, recovered, test, reminder,
  resolved)
- diagnostic sensors ``fps`` and ``backend`` (from ``<prefix>/heartbeat``; unavailable after 3 missed heartbeats)
- switch ``alerts``: commands ``{"alerts": true|false}`` on ``<prefix>/set``, state ``ON``/``OFF`` on
  ``<prefix>/alerts`` (HA's default switch payloads); a read-only binary_sensor instead with ``mqtt.commands: false``
- buttons ``ack`` ("Acknowledge alarm") and ``false_alarm`` ("False alarm"): close the camera's open alarms with
  ``{"ack"|"false_alarm": "all", "camera": "<name>", "by": "home-assistant"}`` on ``<prefix>/set`` (no ``camera``
  key with one camera); none with ``mqtt.commands: false``

With one camera (``camera:``) all of them belong to one device and read ``<prefix>/state`` and ``<prefix>/event``.
With several cameras each camera is a device of its own (so each can be put in its own area, its room), holding
the first four entities and the two buttons on ``<prefix>/<camera>/state|event``, linked by ``via_device`` to the
daemon's device, which keeps the device-level ones (fps, backend, alerts); the camera's device suggests an area
named after the camera (``bedroom_2`` -> "Bedroom 2"), which Home Assistant creates and applies on discovery.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping
from typing import Any, Optional

import paho.mqtt.client as mqtt
from fallwatch.config.schema import HomeAssistantConfig
from fallwatch.daemon.mqtt.outbox import Outbox
from fallwatch.daemon.telemetry.jsonsafe import to_json
from fallwatch.rules.events import EVENT_TYPES as RULE_EVENTS
from fallwatch.rules.events import TEST

log = logging.getLogger(__name__)

ALERTS_ON = "ON"
ALERTS_OFF = "OFF"
# reminder and resolved: the alarm's own events (the alarm contract), on the same topic as fall
EVENT_TYPES = tuple(dict.fromkeys((*RULE_EVENTS, TEST, "reminder", "resolved")))
BY = "home-assistant"  # the "by" of the buttons' commands: who closed the alarm, echoed in `resolved`
AVAILABLE = "online"
NOT_AVAILABLE = "offline"
_REMEMBERED = "ha_discovery"  # the store's key for the config topics last published


def discovery_messages(
    *,
    discovery_prefix: str,
    prefix: str,
    device_id: str,
    version: str,
    heartbeat_s: float,
    commands: bool = True,
    cameras: Optional[Mapping[str, str]] = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, payload) for every entity; publish each retained, as JSON.

    ``cameras``: camera name -> its topic segment (``<prefix>/<segment>/state``), for a device with several
    cameras; None for one camera on ``<prefix>/state``."""
    node = f"fallwatch_{device_id}"
    device = {
        "identifiers": [node],
        "name": f"fallwatch {device_id}",
        "model": "fallwatch fall detector",
        "manufacturer": "fallwatch",
        "sw_version": version,
    }
    origin = {"name": "fallwatch", "sw_version": version}
    heartbeat_topic = f"{prefix}/heartbeat"

    def entity(
        component: str, owner: str, owner_device: dict[str, Any], key: str, name: str, **fields: Any
    ) -> tuple[str, dict[str, Any]]:
        unique_id = f"{owner}_{key}"
        payload = {
            "name": name,
            "unique_id": unique_id,
            # object_id is what HA before 2025.10 reads; default_entity_id replaces it from 2025.10 on.
            "object_id": unique_id,
            "default_entity_id": f"{component}.{unique_id}",
            "availability_topic": f"{prefix}/availability",
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
            "device": owner_device,
            "origin": origin,
            **fields,
        }
        return f"{discovery_prefix}/{component}/{owner}/{key}/config", payload

    def alarm_buttons(
        owner: str, owner_device: dict[str, Any], camera: Optional[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The buttons that close this camera's open alarms (the alarm contract's commands)."""
        where = {} if camera is None else {"camera": camera}
        return [
            entity(
                "button",
                owner,
                owner_device,
                key,
                name,
                command_topic=f"{prefix}/set",
                payload_press=json.dumps({key: "all", **where, "by": BY}),
                icon=icon,
            )
            for key, name, icon in (
                ("ack", "Acknowledge alarm", "mdi:account-check"),
                ("false_alarm", "False alarm", "mdi:alarm-off"),
            )
        ]

    def camera_entities(
        owner: str, owner_device: dict[str, Any], base: str, camera: Optional[str] = None
    ) -> list[tuple[str, dict[str, Any]]]:
        state_topic = f"{base}/state"
        buttons = alarm_buttons(owner, owner_device, camera) if commands else []
        return buttons + [
            entity(
                "binary_sensor",
                owner,
                owner_device,
                "fall",
                "Fall",
                state_topic=state_topic,
                device_class="safety",
                value_template="{{ 'ON' if value_json.state in ('fall', 'person_down') else 'OFF' }}",
                payload_on="ON",
                payload_off="OFF",
                json_attributes_topic=state_topic,
            ),
            entity(
                "binary_sensor",
                owner,
                owner_device,
                "person_down",
                "Person down",
                state_topic=state_topic,
                device_class="safety",
                value_template="{{ 'ON' if value_json.state == 'person_down' else 'OFF' }}",
                payload_on="ON",
                payload_off="OFF",
            ),
            entity(
                "sensor",
                owner,
                owner_device,
                "persons",
                "Persons in view",
                state_topic=state_topic,
                value_template="{{ value_json.persons }}",
                state_class="measurement",
                icon="mdi:account-multiple",
            ),
            # An event entity fires on every event, so an automation triggers on each fall, even a second one
            # while the "fall" binary sensor is still on. HA takes event_type from the rendered JSON.
            entity(
                "event",
                owner,
                owner_device,
                "alert",
                "Fall alert",
                state_topic=f"{base}/event",
                event_types=list(EVENT_TYPES),
                value_template='{"event_type": "{{ value_json.event }}", "id": "{{ value_json.id }}", '
                '"ts": "{{ value_json.ts }}"}',
                icon="mdi:human-handsdown",
            ),
        ]

    device_entities = [
        entity(
            "sensor",
            node,
            device,
            "fps",
            "Frame rate",
            state_topic=heartbeat_topic,
            value_template="{{ value_json.fps }}",
            unit_of_measurement="fps",
            state_class="measurement",
            entity_category="diagnostic",
            expire_after=max(1, int(round(3 * heartbeat_s))),
            icon="mdi:speedometer",
        ),
        entity(
            "sensor",
            node,
            device,
            "backend",
            "Inference backend",
            state_topic=heartbeat_topic,
            value_template="{{ value_json.backend }}",
            entity_category="diagnostic",
            expire_after=max(1, int(round(3 * heartbeat_s))),
            icon="mdi:chip",
        ),
        entity(
            "switch",
            node,
            device,
            "alerts",
            "Alerts",
            command_topic=f"{prefix}/set",
            state_topic=f"{prefix}/alerts",
            payload_on=json.dumps({"alerts": True}),
            payload_off=json.dumps({"alerts": False}),
            state_on=ALERTS_ON,
            state_off=ALERTS_OFF,
            icon="mdi:bell-ring",
        )
        if commands
        # fallwatch takes no commands: a switch would only pretend to work
        else entity(
            "binary_sensor",
            node,
            device,
            "alerts",
            "Alerts",
            state_topic=f"{prefix}/alerts",
            payload_on=ALERTS_ON,
            payload_off=ALERTS_OFF,
            icon="mdi:bell-ring",
        ),
    ]
    if cameras is None:
        return camera_entities(node, device, prefix) + device_entities
    messages = []
    for name, segment in cameras.items():
        owner = f"{node}_{segment}"
        camera_device = {
            "identifiers": [owner],
            "name": f"fallwatch {device_id} {name}",
            "model": "fallwatch camera",
            "manufacturer": "fallwatch",
            "sw_version": version,
            "via_device": node,
            "suggested_area": name.replace("_", " ").replace("-", " ").capitalize(),
        }
        messages += camera_entities(owner, camera_device, f"{prefix}/{segment}", name)
    return messages + device_entities


class Discovery:
    """Publishes the discovery configs (retained), again when Home Assistant announces itself ``online`` on
    ``<discovery_prefix>/status`` (it lost them on a restart without a persistent broker), and removes entities no
    longer published (an empty retained config): discovery switched off, another device id, discovery prefix, or
    a camera gone. The topics published are remembered in the store, so a restart with other settings removes
    the previous run's entities too."""

    def __init__(self, store: Outbox):
        self._store = store
        self._published = self._recall()

    @staticmethod
    def subscribe(client: mqtt.Client, hac: HomeAssistantConfig) -> None:
        """On each connect: listen for Home Assistant's restarts."""
        if hac.enabled:
            client.subscribe(f"{hac.discovery_prefix}/status", qos=1)

    @staticmethod
    def follow(client: mqtt.Client, old: HomeAssistantConfig, new: HomeAssistantConfig) -> None:
        """A reload moved or switched discovery: listen for Home Assistant's restarts where it now is."""
        if old.enabled:
            client.unsubscribe(f"{old.discovery_prefix}/status")
        Discovery.subscribe(client, new)

    @staticmethod
    def is_birth(hac: HomeAssistantConfig, msg: mqtt.MQTTMessage) -> bool:
        """Home Assistant came (back) online: discovery must be published again."""
        return hac.enabled and msg.topic == f"{hac.discovery_prefix}/status" and msg.payload.strip() == b"online"

    def publish(
        self,
        client: mqtt.Client,
        hac: HomeAssistantConfig,
        *,
        prefix: str,
        device_id: str,
        version: str,
        heartbeat_s: float,
        commands: bool,
        cameras: Optional[Mapping[str, str]],
    ) -> None:
        topics: list[str] = []
        if hac.enabled:
            messages = discovery_messages(
                discovery_prefix=hac.discovery_prefix,
                prefix=prefix,
                device_id=device_id,
                version=version,
                heartbeat_s=heartbeat_s,
                commands=commands,
                cameras=cameras,
            )
            for topic, payload in messages:
                client.publish(topic, to_json(payload), qos=1, retain=True)
            topics = [topic for topic, _ in messages]
        for topic in self._published:
            if topic not in topics:
                client.publish(topic, b"", qos=1, retain=True)
        if topics != self._published:
            try:
                self._store.remember(_REMEMBERED, json.dumps(topics))
            except sqlite3.Error as exc:
                log.debug("cannot remember the discovery topics: %s", exc)
        self._published = topics

    def _recall(self) -> list[str]:
        """The config topics an earlier run published (retained on the broker until cleared)."""
        try:
            topics = json.loads(self._store.recall(_REMEMBERED) or "[]")
        except (sqlite3.Error, ValueError):
            return []
        return [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []
