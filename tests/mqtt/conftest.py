"""Fixtures for the MQTT tests: a recording subscriber, publisher configs, in-process and subprocess publishers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt.publisher import MqttPublisher

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test modules import mqtt_testlib
from mqtt_testlib import DEVICE, PublisherProc, Sub, status_figures


@pytest.fixture
def subscriber():
    subs: list[Sub] = []

    def make(port: int, topics: list[str], **kw) -> Sub:
        sub = Sub(port, topics, **kw)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


@pytest.fixture
def persistent_broker(mosquitto_factory):
    """A started broker that keeps sessions on disk, so a subscriber's queued QoS 1 messages survive its restart."""
    return mosquitto_factory(persistent=True).start()


@pytest.fixture
def mqtt_cfg(tmp_path: Path):
    """MqttConfig for a loopback broker, with fast reconnects and the outbox in tmp_path."""

    def make(port: int, **overrides) -> MqttConfig:
        data = {
            "host": "127.0.0.1",
            "port": port,
            "device_id": DEVICE,
            "state_dir": str(tmp_path / "state"),
            "reconnect_max_s": 1,
            "heartbeat_s": 30,
        }
        data.update(overrides)
        return MqttConfig.model_validate(data)

    return make


@pytest.fixture
def publisher():
    pubs: list[MqttPublisher] = []

    def make(cfg: MqttConfig, **kw) -> MqttPublisher:
        kw.setdefault("camera", "test-cam")
        kw.setdefault("version", "0.0-test")
        kw.setdefault("figures", status_figures(kw["camera"], kw["version"]))
        pub = MqttPublisher(cfg, **kw)
        pubs.append(pub)
        return pub

    yield make
    for pub in pubs:
        try:
            pub.stop()
        except Exception:
            pass


@pytest.fixture
def publisher_proc(tmp_path: Path):
    procs: list[PublisherProc] = []

    def make(cfg: MqttConfig) -> PublisherProc:
        config_file = tmp_path / "fallwatch-test.yaml"
        config_file.write_text(yaml.safe_dump({"mqtt": cfg.model_dump(mode="json", exclude_none=True)}))
        proc = PublisherProc(config_file, tmp_path / f"publisher-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.kill()
