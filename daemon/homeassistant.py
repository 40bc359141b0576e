"""Home Assistant MQTT discovery payloads for one fallwatch device.

Entities (all tied to ``<prefix>/availability`` and one device entry):
- binary_sensor ``fall``: on while the state is ``fall`` or ``person_down`` (from the retained ``<prefix>/state``)
- binary_sensor ``person_down``: on while someone has stayed down (a "long lie")
- sensor ``persons``: persons in view (from ``<prefix>/state``)
- diagnostic sensors ``fps`` and ``backend`` (from ``<prefix>/heartbeat``; unavailable after 3 missed heartbeats)
- event ``alert``: fires on each event on ``<prefix>/event`` (event types fall, person_down, recovered, test)
- switch ``alerts``: commands ``{"alerts": true|false}`` on ``<prefix>/set``, state ``ON``/``OFF`` on
  ``<prefix>/alerts`` (HA's default switch payloads); a read-only binary_sensor instead with ``mqtt.commands: false``

Pure data: no MQTT here, so the payloads can be checked without a broker.
"""
from __future__ import annotations

import json
from typing import Any

ALERTS_ON = "ON"
ALERTS_OFF = "OFF"
EVENT_TYPES = ("fall", "person_down", "recovered", "test")
AVAILABLE = "online"
NOT_AVAILABLE = "offline"


def discovery_messages(*, discovery_prefix: str, prefix: str, device_id: str, version: str,
                       heartbeat_s: float, commands: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, payload) for every entity; publish each retained, as JSON."""
    node = f"fallwatch_{device_id}"
    device = {
        "identifiers": [node],
        "name": f"fallwatch {device_id}",
        "model": "fallwatch fall detector",
        "manufacturer": "fallwatch",
        "sw_version": version,
    }
    origin = {"name": "fallwatch", "sw_version": version}
    state_topic = f"{prefix}/state"
    heartbeat_topic = f"{prefix}/heartbeat"

    def entity(component: str, key: str, name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        unique_id = f"{node}_{key}"
        payload = {
            "name": name,
            "unique_id": unique_id,
            # object_id is what HA before 2025.10 reads; default_entity_id replaces it from 2025.10 on.
            "object_id": unique_id,
            "default_entity_id": f"{component}.{unique_id}",
            "availability_topic": f"{prefix}/availability",
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
            "device": device,
            "origin": origin,
            **fields,
        }
        return f"{discovery_prefix}/{component}/{node}/{key}/config", payload

    return [
        entity("binary_sensor", "fall", "Fall", state_topic=state_topic, device_class="safety",
               value_template="{{ 'ON' if value_json.state in ('fall', 'person_down') else 'OFF' }}",
               payload_on="ON", payload_off="OFF", json_attributes_topic=state_topic),
        entity("binary_sensor", "person_down", "Person down", state_topic=state_topic, device_class="safety",
               value_template="{{ 'ON' if value_json.state == 'person_down' else 'OFF' }}",
               payload_on="ON", payload_off="OFF"),
        entity("sensor", "persons", "Persons in view", state_topic=state_topic,
               value_template="{{ value_json.persons }}", state_class="measurement", icon="mdi:account-multiple"),
        entity("sensor", "fps", "Frame rate", state_topic=heartbeat_topic, value_template="{{ value_json.fps }}",
               unit_of_measurement="fps", state_class="measurement", entity_category="diagnostic",
               expire_after=max(1, int(round(3 * heartbeat_s))), icon="mdi:speedometer"),
        entity("sensor", "backend", "Inference backend", state_topic=heartbeat_topic,
               value_template="{{ value_json.backend }}", entity_category="diagnostic",
               expire_after=max(1, int(round(3 * heartbeat_s))), icon="mdi:chip"),
        # An event entity fires on every event, so an automation triggers on each fall, even a second one while
        # the "fall" binary sensor is still on. HA takes event_type from the rendered JSON.
        entity("event", "alert", "Fall alert", state_topic=f"{prefix}/event", event_types=list(EVENT_TYPES),
               value_template='{"event_type": "{{ value_json.event }}", "id": "{{ value_json.id }}", '
                              '"ts": "{{ value_json.ts }}"}',
               icon="mdi:human-handsdown"),
        entity("switch", "alerts", "Alerts", command_topic=f"{prefix}/set", state_topic=f"{prefix}/alerts",
               payload_on=json.dumps({"alerts": True}), payload_off=json.dumps({"alerts": False}),
               state_on=ALERTS_ON, state_off=ALERTS_OFF, icon="mdi:bell-ring") if commands else
        # fallwatch takes no commands: a switch would only pretend to work
        entity("binary_sensor", "alerts", "Alerts", state_topic=f"{prefix}/alerts", payload_on=ALERTS_ON,
               payload_off=ALERTS_OFF, icon="mdi:bell-ring"),
    ]
