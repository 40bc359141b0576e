"""The parts behind MqttPublisher, each alone: the heartbeat message, the worker threads, the inbox's guards, the
retained states and the sender (the last two against a real mosquitto, wired by hand as the publisher wires them)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt.commands.alerts_switch import AlertsSwitch
from fallwatch.daemon.mqtt.commands.inbox import COMMAND_LIMITS, Actions, Inbox
from fallwatch.daemon.mqtt.delivery import Sender
from fallwatch.daemon.mqtt.heartbeat import message
from fallwatch.daemon.mqtt.link.client import LOGGER
from fallwatch.daemon.mqtt.link.connection import WINDOW, Connection, Hooks
from fallwatch.daemon.mqtt.link.watchdog import Workers
from fallwatch.daemon.mqtt.outbox import Outbox
from fallwatch.daemon.mqtt.retained import Retained
from fallwatch.daemon.mqtt.topics import CameraTopics
from fallwatch.daemon.telemetry.builder import SnapshotBuilder
from fallwatch.daemon.telemetry.snapshot import CameraStats, MqttStats, metrics
from mqtt_testlib import DEVICE, PREFIX, make_event, wait_until


def cfg_for(port: int, tmp_path: Path, **kw: Any) -> MqttConfig:
    return MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "device_id": DEVICE, "state_dir": str(tmp_path), "reconnect_max_s": 1, **kw}
    )


# ---- heartbeat ------------------------------------------------------------------------------------------------
def test_heartbeat_message_is_a_view_of_the_one_snapshot():
    """The heartbeat shows the figures of the same snapshot as /api/stats and /metrics (built once, viewed thrice),
    with the keys Home Assistant and the docs read."""
    figures = SnapshotBuilder("9.9", ["hall"])
    hall = CameraStats("hall", capture="running", fps=9.5, persons=1, dropped_frames=2)
    figures.provide("daemon", lambda now: {"backend": "cpu", "cameras": {"hall": hall}, "cpu_temp_c": 51.2})
    mqtt = MqttStats(enabled=True, events_sent=3, events_queued=2, events_suppressed=1, alerts=False)
    figures.provide("mqtt", lambda now: {"mqtt": mqtt})
    figures.provide("labelled", lambda now: {"labelled": {"fall": 4}}, heavy=True)
    snap = figures.build(figures.started_mono + 12.34, heavy=True)
    hb, stats = message(snap, heartbeat_s=30, device="pi"), snap.to_json()
    assert set(hb) == {
        *("ts", "uptime_s", "heartbeat_s", "version", "device", "backend", "backend_reason", "camera", "fps"),
        *("persons", "state", "dropped_frames", "corrupt_frames", "labelled", "alarms", "notify", "cpu_temp_c"),
        *("cameras", "events_sent", "events_queued", "events_dropped", "events_suppressed", "alerts"),
        "alerts_resume_at",
    }
    assert (hb["backend"], hb["camera"], hb["fps"], hb["persons"]) == ("cpu", "running", 9.5, 1)
    assert hb["cpu_temp_c"] == stats["cpu_temp_c"] == 51.2
    assert b"fallwatch_cpu_temperature_celsius 51.2" in metrics(snap)
    assert (hb["events_sent"], hb["events_queued"]) == (stats["events"]["sent"], stats["events"]["queued"]) == (3, 2)
    assert (
        (hb["events_suppressed"], hb["alerts"]) == (stats["mqtt"]["events_suppressed"], stats["alerts"]) == (1, False)
    )
    assert (hb["uptime_s"], hb["heartbeat_s"], hb["version"], hb["device"]) == (12.3, 30, "9.9", "pi")
    assert hb["labelled"] == {"fall": 4} and hb["ts"].endswith("Z")


def test_a_heavy_provider_is_pulled_only_when_asked_and_its_figures_stay():
    figures = SnapshotBuilder("1", ["hall"])
    pulls: list[float] = []
    figures.provide("labelled", lambda now: pulls.append(now) or {"labelled": {"fall": len(pulls)}}, heavy=True)
    assert figures.build(1.0).labelled is None and pulls == []
    assert figures.build(2.0, heavy=True).labelled == {"fall": 1}
    assert figures.build(3.0).labelled == {"fall": 1} and pulls == [2.0], "kept, not pulled again"


# ---- workers --------------------------------------------------------------------------------------------------
def test_workers_start_an_ended_thread_again_by_name_but_never_the_caller():
    stop = threading.Event()
    runs: list[str] = []
    go_on = threading.Event()

    def short() -> None:
        runs.append(threading.current_thread().name)

    def long() -> None:
        go_on.wait(10)

    workers = Workers(stop)
    workers.start({"mqtt-short": short, "mqtt-long": long})
    assert wait_until(lambda: runs == ["mqtt-short"], 5)
    workers.revive()
    assert wait_until(lambda: runs == ["mqtt-short", "mqtt-short"], 5), runs
    stop.set()
    workers.revive()  # stopping: nothing is started again
    go_on.set()
    workers.join(timeout=2)
    assert runs == ["mqtt-short", "mqtt-short"]


# ---- inbox ----------------------------------------------------------------------------------------------------
class RecordingClient(mqtt.Client):
    """A paho client never connected, recording what is published through it."""

    def __init__(self) -> None:
        super().__init__(mqtt.CallbackAPIVersion.VERSION2)
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic, payload=None, qos=0, retain=False, properties=None):  # type: ignore[override]
        self.sent.append((topic, payload, retain))
        return super().publish(topic, payload, qos, retain, properties)


def incoming(topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload, msg.retain = payload, retain
    return msg


def test_inbox_limits_test_commands_and_clears_a_retained_one(tmp_path):
    calls: list[Any] = []
    actions = Actions(
        set_alerts=lambda on, why: calls.append(("alerts", on)),
        test=lambda: calls.append("test"),
        republish=lambda client: calls.append("republish"),
        feedback=None,
        answer=None,
    )
    inbox = Inbox(Connection(cfg_for(1, tmp_path), hooks=None), actions)  # type: ignore[arg-type]
    client = RecordingClient()
    for _ in range(COMMAND_LIMITS["test"][0] + 3):
        inbox.on_message(client, incoming(f"{PREFIX}/set", b'{"test": true}'))
    assert calls == ["test"] * COMMAND_LIMITS["test"][0]
    inbox.on_message(client, incoming(f"{PREFIX}/set", b'{"alerts": false}', retain=True))
    assert ("alerts", False) not in calls and client.sent == [(f"{PREFIX}/set", b"", True)]
    inbox.on_message(client, incoming(f"{PREFIX}/set", b'{"alerts": false}'))
    assert calls[-1] == ("alerts", False)
    huge = b'{"alerts": true}' + b" " * (70 * 1024)  # valid JSON, but above the cap: never parsed
    inbox.on_message(client, incoming(f"{PREFIX}/set", huge))
    assert calls[-1] == ("alerts", False)


# ---- retained states and the sender, on a real broker ---------------------------------------------------------
class Wired:
    """A Connection, Retained and Sender wired as MqttPublisher wires them (no publisher, no heartbeat)."""

    def __init__(self, cfg: MqttConfig, outbox: Outbox):
        self.stop = threading.Event()
        topics = CameraTopics(PREFIX, "cam")
        self.retained = Retained(outbox, AlertsSwitch(outbox, 3600), topics, "0-test")
        hooks = Hooks(
            linked=lambda client: self.sender.reconnected(),
            up=self.up,
            down=self.retained.detach,
            replaced=self.replaced,
            published=lambda mid, rc: self.sender.published(mid, rc),
            message=lambda client, msg: None,
        )
        self.link = Connection(cfg, hooks)
        self.sender = Sender(self.link, outbox, self.retained, topics, self.stop)
        self.thread = threading.Thread(target=self.sender.loop, name="mqtt-sender", daemon=True)
        self.thread.start()

    def up(self, client: mqtt.Client) -> None:
        self.retained.attach(client)
        self.sender.wake.set()

    def replaced(self) -> None:
        self.sender.reset()
        self.retained.detach(forget=True)

    def close(self) -> None:
        self.stop.set()
        self.sender.wake.set()
        self.thread.join(2)
        with self.link.lock:
            self.link.disconnect(0.5)


def test_retained_states_wait_for_the_link_and_go_out_in_order(mosquitto, subscriber, tmp_path):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/state"])
    wired = Wired(cfg_for(mosquitto.port, tmp_path), Outbox(tmp_path / "o.sqlite3", 100))
    try:
        wired.retained.set({"state": "ok"}, None)
        wired.retained.set({"state": "ok"}, None)  # the same: not again
        wired.link.connect()
        assert wait_until(lambda: wired.link.connected and wired.retained.published(), 5)
        wired.retained.set({"state": "fall"}, None)
        assert sub.wait_for(lambda s: s.json_on(f"{PREFIX}/state") == [{"state": "ok"}, {"state": "fall"}], 5)
        with wired.link.lock:
            wired.link.disconnect(0.5)
        wired.retained.set({"state": "person_down"}, None)  # no link: kept for the next one, not published
        wired.link.connect()
        assert sub.wait_for(lambda s: s.json_on(f"{PREFIX}/state")[-1:] == [{"state": "person_down"}], 5)
    finally:
        wired.close()
    assert sub.json_on(f"{PREFIX}/state") == [{"state": "ok"}, {"state": "fall"}, {"state": "person_down"}]


def test_sender_delivers_the_outbox_in_order_within_its_window(mosquitto, subscriber, tmp_path):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    outbox = Outbox(tmp_path / "o.sqlite3", 1000)
    wired = Wired(cfg_for(mosquitto.port, tmp_path), outbox)
    events = [dict(make_event("fall", i), camera="cam") for i in range(3 * WINDOW)]
    for event in events:  # queued before any link: all on disk
        wired.sender.queue("fall", event["id"], json.dumps(event).encode(), None)
    wired.sender.queue("fall", events[0]["id"], json.dumps(events[0]).encode(), None)  # the same id: not twice
    assert len(outbox) == len(events)
    most = 0

    def watch_window() -> None:
        nonlocal most
        while not wired.stop.is_set():
            most = max(most, wired.sender.in_flight())

    watcher = threading.Thread(target=watch_window, daemon=True)
    try:
        wired.link.connect()
        watcher.start()
        got = sub.wait_count(f"{PREFIX}/event", len(events), timeout=20)
        assert [json.loads(p)["id"] for p in got] == [e["id"] for e in events]
        assert wait_until(lambda: len(outbox) == 0 and wired.sender.events_sent == len(events), 5)
    finally:
        wired.close()
        watcher.join(2)
    assert 0 < most <= WINDOW, most


# ---- the publisher's outbox seam ------------------------------------------------------------------------------
class FullDisk(Outbox):
    """An outbox on a disk that has filled up: every new event fails to be stored."""

    def put(self, event_id: str, payload: bytes):  # type: ignore[override]
        raise sqlite3.OperationalError("database or disk is full")


def test_publisher_sends_an_event_its_outbox_cannot_store(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    made: list[Outbox] = []

    def full_disk(cfg: MqttConfig) -> Outbox:
        made.append(FullDisk(Path(cfg.state_dir or ".") / "full.sqlite3", cfg.outbox_max))
        return made[-1]

    pub = publisher(mqtt_cfg(mosquitto.port), outbox=full_disk)
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    event = make_event("fall")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]
    assert len(made) == 1 and len(made[0]) == 0 and pub.outbox_path == made[0].path
    assert any(
        "cannot store fall event" in r.getMessage() and "sent without it" in r.getMessage() for r in caplog.records
    )
