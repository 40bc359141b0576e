"""Nothing a broker sends silences the MQTT client: a topic that is not UTF-8, a huge message (live or retained),
floods of bad commands and of feedback; and a watchdog restarts a client whose network loop stopped or that stayed
disconnected, saying so in stats() (which /healthz and the systemd status read). Real paho, real mosquitto; a
few lines of raw-socket MQTT (tests/rawmqtt.py) for what paho or mosquitto refuse to send."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import pytest
from fallwatch.daemon.mqtt.commands.inbox import COMMAND_LIMITS
from fallwatch.daemon.mqtt.link.client import MAX_MESSAGE_BYTES
from mqtt_testlib import PREFIX, make_event, wait_until
from rawmqtt import (
    OneClientBroker,
    RawClient,
    publish_head,
    remaining_length,
)  # tests/ is on the path (tests/conftest.py)

MQTT_LOGGER = "fallwatch.daemon.mqtt.publisher"


def _lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == MQTT_LOGGER and text in r.getMessage()]


def test_topic_not_utf8_is_refused_and_the_client_carries_on(mqtt_cfg, publisher, caplog):
    """Issue 21 item 1: before, `_on_message` logged `msg.topic`, which raised again inside paho's thread and ended
    the network loop for good. mosquitto refuses such a topic from its clients, so the broker here is a raw one."""
    broker = OneClientBroker()
    try:
        pub = publisher(mqtt_cfg(broker.port, homeassistant={"enabled": False}))
        with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
            pub.start()
            broker.accept()
            assert wait_until(lambda: pub.listening, 10)
            bad = b"\xff\xfe" + f"{PREFIX}/set".encode()
            payload = json.dumps({"alerts": False}).encode()
            broker.send(publish_head(bad, len(payload)) + payload)
            broker.send(publish_head(b"\xc3(" + b"/x", 2) + b"hi")  # another invalid sequence, another topic
            assert wait_until(lambda: len(_lines(caplog, "topic is not UTF-8")) == 2, 10), caplog.text
            # the loop still runs: a good command is applied, and the client still publishes
            good = json.dumps({"test": True}).encode()
            broker.send(publish_head(f"{PREFIX}/set".encode(), len(good)) + good)
            assert wait_until(lambda: broker.payloads(f"{PREFIX}/event".encode()), 10), caplog.text
        assert pub.alerts_enabled, "the command on the invalid topic was applied"
        assert pub.connected and not broker.closed.is_set()
        assert "Traceback" not in caplog.text and pub.stats()["restarts"] == 0
    finally:
        broker.close()


def test_huge_retained_command_refused_unread_and_cleared(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    """Issue 21 item 2 (MQTT 3.1.1, which cannot tell the broker a size limit): refused in one line, never parsed,
    the retained copy cleared so it is not read again on every reconnect, and no event delivered twice."""
    size = 8 * 1024 * 1024
    raw = RawClient(mosquitto.port, "attacker")
    raw.publish_stream(f"{PREFIX}/set".encode(), size, retain=True)
    raw.close()
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    pub = publisher(mqtt_cfg(mosquitto.port))
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: _lines(caplog, "clearing it on the broker"), 30), caplog.text
        assert _lines(caplog, f"ignored a message of {size} bytes on {PREFIX}/set (more than {MAX_MESSAGE_BYTES})")
        for n in range(3):
            pub.publish_event(make_event("fall", n))
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 3, 20)  # sent after the clearing
        late = subscriber(mosquitto.port, [f"{PREFIX}/set"])  # a retained message would reach it first
        late.client.publish(f"{PREFIX}/set", b"", qos=1)  # then this marker (empty: no command)
        assert late.wait_for(lambda s: s.on(f"{PREFIX}/set"), 10)
        assert late.on(f"{PREFIX}/set") == [b""], "the retained junk is still on the broker"
        pub.stop()  # and again: a restart finds no junk
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        pub.publish_event(make_event("fall", 9))
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 4, 20)
    ids = [json.loads(p)["id"] for p in sub.on(f"{PREFIX}/event")]
    assert len(ids) == len(set(ids)) == 4, "an event delivered twice"
    assert len(_lines(caplog, "ignored a message of")) == 1
    assert len(_lines(caplog, "MQTT connected")) == 2, "reconnected while reading the junk"
    assert not _lines(caplog, "ignored command"), "the junk (or its clearing) was parsed as a command"


def test_huge_message_never_sent_to_an_mqtt5_client(mosquitto, mqtt_cfg, publisher, caplog):
    """With MQTT 5 the CONNECT says the Maximum Packet Size we take: mosquitto drops larger messages for us, so
    they never reach paho (nor its memory)."""
    pub = publisher(mqtt_cfg(mosquitto.port, protocol="5"))
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        raw = RawClient(mosquitto.port, "attacker")
        raw.publish_stream(f"{PREFIX}/set".encode(), 4 * MAX_MESSAGE_BYTES)
        raw.publish(f"{PREFIX}/set".encode(), json.dumps({"alerts": False}).encode())
        raw.close()
        assert wait_until(lambda: not pub.alerts_enabled, 10)
    assert not _lines(caplog, "ignored a message of"), "the broker sent it all the same"
    assert "Dropping too large outgoing PUBLISH" in mosquitto.log.read_text()


@pytest.mark.slow
def test_bad_command_flood_logs_a_few_lines(mosquitto, mqtt_cfg, publisher, caplog):
    """Issue 21 item 7: 200,000 bad commands logged 64,000 WARNING lines. Now a burst of 5 per minute (the rest
    counted), and the commands after the flood still work."""
    pub = publisher(mqtt_cfg(mosquitto.port))
    n = 20000
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        raw = RawClient(mosquitto.port, "flooder")
        junk = publish_head(f"{PREFIX}/set".encode(), 5) + b"junk!"
        raw.sock.sendall(junk * n)
        raw.publish(f"{PREFIX}/set".encode(), json.dumps({"alerts": False}).encode())
        raw.close()
        assert wait_until(lambda: not pub.alerts_enabled, 60)
    warnings = [r for r in caplog.records if r.name == MQTT_LOGGER and r.levelno >= logging.WARNING]
    assert len(_lines(caplog, "ignored command")) == 5
    assert len(warnings) <= 7, [r.getMessage() for r in warnings]  # + the pause itself


def test_feedback_flood_is_rate_limited(mosquitto, mqtt_cfg, publisher, caplog):
    """Issue 21 item 6: anonymous feedback must not churn the records: at most COMMAND_LIMITS per minute reach them."""
    labelled: list[tuple] = []
    pub = publisher(mqtt_cfg(mosquitto.port), on_feedback=lambda i, label: labelled.append((i, label)))
    most, window_s = COMMAND_LIMITS["feedback"]
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        raw = RawClient(mosquitto.port, "flooder")
        for i in range(200):
            raw.publish(f"{PREFIX}/set".encode(), json.dumps({"feedback": {"id": f"e{i}", "label": "fall"}}).encode())
        raw.publish(f"{PREFIX}/set".encode(), json.dumps({"alerts": False}).encode())
        raw.close()
        assert wait_until(lambda: not pub.alerts_enabled, 30)
    assert labelled == [(f"e{i}", "fall") for i in range(most)]
    assert len(_lines(caplog, f"ignored feedback on {PREFIX}/set: more than {most} in {window_s:g} s")) == 5


def test_watchdog_restarts_a_stopped_network_loop(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
    pub = publisher(mqtt_cfg(mosquitto.port))
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        pub.link.client.loop_stop()  # what an exception inside paho's thread did before the guards
        assert wait_until(lambda: _lines(caplog, "restarting the client, its network loop stopped"), 10)
        assert wait_until(lambda: pub.listening, 10)
        pub.publish_event(make_event("fall"))
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) == 1, 20), caplog.text
        assert wait_until(lambda: pub.stats()["events_queued"] == 0, 10), "no PUBACK read: the loop is not running"
    assert pub.stats()["restarts"] == 1 and pub.healthy()


def test_watchdog_says_mqtt_is_down_past_the_limit_and_recovers(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    pub = publisher(mqtt_cfg(mosquitto.port, watchdog_s=2))
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        assert pub.healthy() and pub.stats()["down_s"] is None
        mosquitto.stop()
        assert wait_until(lambda: not pub.connected, 10)
        assert pub.healthy(), "unhealthy at once: a broker restart must not flap /healthz"
        assert wait_until(lambda: not pub.healthy(), 10)
        stats = pub.stats()
        assert stats["down_s"] >= 2 and stats["down_reason"] and "unreachable" in stats["down_reason"]
        assert wait_until(lambda: pub.stats()["restarts"] >= 1, 10)
        mosquitto.start()
        sub = subscriber(mosquitto.port, [f"{PREFIX}/event"])
        assert wait_until(pub.healthy, 30) and pub.stats()["down_s"] is None
        pub.publish_event(make_event("fall"))
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) == 1, 20)
    assert _lines(caplog, "MQTT watchdog: restarting the client, disconnected for")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_huge_message_does_not_grow_memory(mosquitto, mqtt_cfg, publisher_proc, protocol):
    """Issue 21 item 2: 200 MB on <prefix>/set took the daemon from 137 to 923 MB (paho held it whole, and copies).
    Here 64 MB: the publisher process's peak RSS (VmHWM) must not grow by more than 16 MB. MQTT 5: the broker does
    not send it (Maximum Packet Size); 3.1.1: the client drops the body as it arrives."""
    proc = publisher_proc(mqtt_cfg(mosquitto.port, protocol=protocol))

    def stats() -> dict:
        proc.proc.stdin.write("stats\n")
        proc.proc.stdin.flush()
        return json.loads(proc.readline(30))

    def peak_mb() -> float:
        return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{proc.proc.pid}/status").read_text()).group(1)) / 1024

    assert wait_until(lambda: stats()["listening"], 20), proc.log()  # subscribed (SUBACK), not just connected
    before = peak_mb()
    raw = RawClient(mosquitto.port, "attacker", timeout=60)
    raw.publish_stream(f"{PREFIX}/set".encode(), 64 << 20)
    raw.publish(f"{PREFIX}/set".encode(), json.dumps({"alerts": False}).encode())
    raw.close()
    assert wait_until(lambda: stats()["alerts"] is False, 60), proc.log()
    grew = peak_mb() - before
    assert grew < 16, f"peak RSS grew by {grew:.0f} MB"
    assert stats()["connected"] and stats()["restarts"] == 0


def test_status_line_says_mqtt_is_down():
    """systemd's STATUS=: nothing while MQTT delivers; how long it has not; DOWN past mqtt.watchdog_s."""
    from fallwatch.daemon.telemetry.snapshot import CameraStats, MqttStats, Snapshot, status_line

    snap = Snapshot(version="x", cameras={"hall": CameraStats("hall", fps=9.5, capture="running")}, ready=True)
    snap = snap.replace(backend="cpu")
    assert status_line(snap.replace(mqtt=MqttStats(enabled=True, connected=True))).endswith("camera running")
    brief = MqttStats(enabled=True, down_s=12.0, down_reason="MQTT broker 127.0.0.1:1883 unreachable")
    assert status_line(snap.replace(mqtt=brief)).endswith("camera running, MQTT disconnected 12 s")
    down = MqttStats(enabled=True, healthy=False, down_s=130.0, down_reason="MQTT broker 127.0.0.1:1883 unreachable")
    assert status_line(snap.replace(mqtt=down)).endswith(
        "MQTT DOWN for 130 s (MQTT broker 127.0.0.1:1883 unreachable): alerts cannot be sent"
    )


def test_home_assistant_birth_flood_publishes_discovery_a_few_times(mosquitto, mqtt_cfg, publisher, caplog):
    pub = publisher(mqtt_cfg(mosquitto.port))
    most, _ = COMMAND_LIMITS["birth"]
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: pub.listening, 10)
        raw = RawClient(mosquitto.port, "flooder")
        for _ in range(200):
            raw.publish(b"homeassistant/status", b"online")
        raw.publish(f"{PREFIX}/set".encode(), json.dumps({"alerts": False}).encode())
        raw.close()
        assert wait_until(lambda: not pub.alerts_enabled, 30)
    assert len(_lines(caplog, "publishing discovery again")) == most
    assert len(_lines(caplog, f"Home Assistant said online more than {most} times")) == 5


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread made to end
def test_watchdog_starts_a_worker_thread_again(mosquitto, subscriber, mqtt_cfg, publisher, caplog):
    """The heartbeat thread ended by a failure it did not catch (e.g. the outbox failing as a pause expires): the
    watchdog starts it again, so heartbeats (what watchers see of the device) go on."""
    sub = subscriber(mosquitto.port, [f"{PREFIX}/heartbeat"])
    pub = publisher(mqtt_cfg(mosquitto.port, heartbeat_s=1))
    real = pub.end_expired_pause
    failed: list[bool] = []

    def fail_once() -> None:
        if not failed and threading.current_thread().name == "mqtt-heartbeat":
            failed.append(True)
            raise RuntimeError("disk I/O error")
        real()

    pub.end_expired_pause = fail_once
    with caplog.at_level(logging.INFO, logger=MQTT_LOGGER):
        pub.start()
        assert wait_until(lambda: _lines(caplog, "the mqtt-heartbeat thread ended; starting it again"), 10)
        seen = len(sub.on(f"{PREFIX}/heartbeat"))
        assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/heartbeat")) >= seen + 2, 10)


def test_a_huge_packet_of_another_kind_ends_the_connection(mqtt_cfg, publisher):
    """Only a PUBLISH may be large (it is then dropped as it arrives); a broker sending any other packet of 1 MiB is
    broken: the client hangs up (and reconnects) rather than reading it."""
    broker = OneClientBroker()
    try:
        pub = publisher(mqtt_cfg(broker.port, homeassistant={"enabled": False}))
        pub.start()
        broker.accept()
        assert wait_until(lambda: pub.listening, 10)
        try:
            broker.send(bytes([0x90]) + remaining_length(1 << 20) + bytes(1 << 20))  # a SUBACK of 1 MiB
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up after the header, before the broker had written it all: what is wanted
        assert broker.closed.wait(10), "the client kept reading"
        assert wait_until(lambda: not pub.connected, 10)
    finally:
        broker.close()
