"""Pure helpers of the MQTT module, and the publisher's behaviour without a broker."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt.link.connection import device_id_of, prefix_of
from fallwatch.daemon.mqtt.outbox import Outbox
from fallwatch.daemon.mqtt.publisher import MqttPublisher
from fallwatch.daemon.mqtt.topics import sanitize_id
from fallwatch.daemon.telemetry.jsonsafe import to_json
from fallwatch.daemon.telemetry.system import cpu_temp_c
from mqtt_testlib import make_event, status_figures


def test_mqtt_to_json_is_strict_json_for_numpy_and_nan():
    payload = {
        "angle": np.float32(80.5),
        "frame": np.int64(7),
        "box": np.array([1.5, 2, 3, 4]),
        "rate": float("nan"),
        "inf": float("inf"),
        "nested": [(np.float64(1.25), None)],
        "ok": True,
    }
    data = json.loads(to_json(payload))  # strict parse: NaN would fail
    assert data == {
        "angle": 80.5,
        "frame": 7,
        "box": [1.5, 2.0, 3.0, 4.0],
        "rate": None,
        "inf": None,
        "nested": [[1.25, None]],
        "ok": True,
    }
    assert b"NaN" not in to_json({"x": np.float64("nan")})


def test_mqtt_ids_and_prefix():
    assert sanitize_id("pi.local/+#") == "pi_local___"
    cfg = MqttConfig(device_id="Kitchen Pi")
    assert device_id_of(cfg) == "Kitchen_Pi" and prefix_of(cfg) == "fallwatch/Kitchen_Pi"
    assert prefix_of(MqttConfig(device_id="x", topic_prefix="home/fall/")) == "home/fall"
    assert device_id_of(MqttConfig()) == sanitize_id(__import__("socket").gethostname())


def test_mqtt_cpu_temp(tmp_path):
    f = tmp_path / "temp"
    f.write_text("48312\n")
    assert cpu_temp_c(f) == 48.3
    assert cpu_temp_c(tmp_path / "missing") is None
    f.write_text("garbage")
    assert cpu_temp_c(f) is None


def test_mqtt_events_are_durable_without_any_broker(tmp_path):
    """Never started, or stopped: events still land in the outbox, for the next start to send."""
    cfg = MqttConfig(host="127.0.0.1", port=1, device_id="d", state_dir=str(tmp_path))
    pub = MqttPublisher(cfg, camera="c", version="v", figures=status_figures("c", "v"))
    pub.publish_event(make_event("fall"))
    pub.start()
    pub.stop()
    pub.publish_event(make_event("person_down"))  # raised while shutting down
    again = MqttPublisher(cfg, camera="c", version="v")  # figures of its own: MQTT's only
    assert again.stats()["events_queued"] == 2 and not again.connected
    rows = Outbox(again.outbox_path, 100).after(0, 10)  # what the next start reads from disk
    assert [json.loads(p)["event"] for _, _, p in rows] == ["fall", "person_down"]
    assert json.loads(rows[0][2])["backend"] == "cpu" and json.loads(rows[0][2])["device"] == "d"


def test_an_event_without_its_own_id_or_time_is_refused_naming_what_it_lacks(tmp_path):
    """Events carry their id and ts from where they were made (rules/events.py, alarms/alarm_event.py)."""
    cfg = MqttConfig(host="127.0.0.1", port=1, device_id="d", state_dir=str(tmp_path))
    pub = MqttPublisher(cfg, camera="c", version="v")
    bare = {k: v for k, v in make_event("fall").items() if k not in ("id", "ts")}
    with pytest.raises(ValueError, match="without id and ts"):
        pub.publish_event(bare)
    assert pub.stats()["events_queued"] == 0
