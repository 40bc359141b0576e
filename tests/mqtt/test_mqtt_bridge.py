"""A care home's set-up: each device on the site's mosquitto, which bridges `fallwatch/#` to a central mosquitto
(QoS 1, cleansession false; the README's configuration). Events reach a consumer on the central broker, and
while the central broker is down (and the site broker restarts meanwhile) the site broker keeps the events it
acknowledged and forwards them once the bridge is back: nothing QoS 1 promises is lost. `fallwatch watch` on the
central broker sees the device through the bridge."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mqtt_testlib import make_event, wait_until

BRIDGE = "central"
STATE_TOPIC = f"$SYS/broker/connection/site-{BRIDGE}/state"  # the bridge's own notification: 1 up, 0 down


def site_conf(central_port: int) -> str:
    """The README's site-broker bridge, with a 1 s reconnect instead of the default backoff (5-30 s)."""
    return (
        "allow_anonymous true\n"
        f"connection {BRIDGE}\n"
        f"address 127.0.0.1:{central_port}\n"
        "topic fallwatch/# out 1\n"
        "cleansession false\n"
        f"remote_clientid site-{BRIDGE}\n"
        "bridge_protocol_version mqttv311\n"
        "keepalive_interval 10\n"
        "restart_timeout 1\n"
        "notifications true\n"
    )


def event_ids(sub, topic: str = "fallwatch/testdev/event") -> list[str]:
    return [json.loads(p)["id"] for p in sub.on(topic)]


@pytest.mark.slow
def test_bridge_forwards_events_and_loses_none_while_central_is_down(
    mosquitto_factory, subscriber, mqtt_cfg, publisher
):
    central = mosquitto_factory(persistent=True).start()
    site = mosquitto_factory(site_conf(central.port), persistent=True).start()
    link = subscriber(site.port, [STATE_TOPIC])
    assert link.wait_for(lambda s: s.on(STATE_TOPIC)[-1:] == [b"1"], 10), "the bridge did not come up"
    # the night desk's consumer: a persistent session, so the central broker keeps its messages over a restart
    desk = subscriber(central.port, ["fallwatch/#"], client_id="night-desk", clean=False)

    device = publisher(mqtt_cfg(site.port))
    device.set_state({"state": "ok", "persons": 1})
    device.start()
    before = [make_event("fall", n) for n in range(2)]
    for event in before:
        device.publish_event(event)
    assert desk.wait_for(lambda s: set(event_ids(s)) == {e["id"] for e in before}, 10), event_ids(desk)
    assert desk.wait_for(lambda s: s.on("fallwatch/testdev/availability")[-1:] == [b"online"], 5)

    central.stop()
    assert link.wait_for(lambda s: s.on(STATE_TOPIC)[-1:] == [b"0"], 10), "the site broker did not see the bridge go"
    during = [make_event("fall", n) for n in range(2, 5)]
    for event in during[:2]:
        device.publish_event(event)
    # the site broker acknowledged them (the device's outbox is empty): from here on they are the bridge's to keep
    assert wait_until(lambda: device.stats()["events_queued"] == 0 and device.stats()["events_sent"] == 4, 10), (
        device.stats()
    )
    site.stop()  # and the site broker restarts too: its persistence keeps the bridge's queue
    site.start()
    assert wait_until(lambda: device.connected, 10), "the device did not reconnect to the site broker"
    device.publish_event(during[2])
    assert wait_until(lambda: device.stats()["events_queued"] == 0, 10), device.stats()
    assert event_ids(desk) == [e["id"] for e in before], "events went through while the central broker was down"

    central.start()
    every = {e["id"] for e in before + during}
    assert desk.wait_for(lambda s: set(event_ids(s)) == every, 15), (
        f"lost across the bridge outage: {every - set(event_ids(desk))}"
    )
    received = [json.loads(p) for p in desk.on("fallwatch/testdev/event")]
    assert all(e["device"] == "testdev" for e in received)

    # the night desk's view on the central broker: the retained availability and state came across the bridge
    watch = subprocess.run(
        [
            sys.executable,
            "-m",
            "fallwatch.daemon.cli.main",
            "watch",
            "--host",
            "127.0.0.1",
            "--port",
            str(central.port),
            "--once",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert watch.returncode == 0, watch.stderr
    (seen,) = json.loads(watch.stdout)["devices"]
    assert (seen["device"], seen["availability"], seen["cameras"][0]["state"]) == ("testdev", "online", "ok")

    device.stop()  # a clean stop reaches the central desk too
    assert desk.wait_for(lambda s: s.on("fallwatch/testdev/availability")[-1:] == [b"offline"], 5)
