"""The publisher in its own process: Last Will on SIGKILL, and no event lost across broker outage + restart."""

from __future__ import annotations

import json

import pytest
from mqtt_testlib import PREFIX, wait_until


@pytest.mark.slow
def test_mqtt_availability_online_then_offline_on_sigkill(mosquitto, subscriber, mqtt_cfg, publisher_proc):
    proc = publisher_proc(mqtt_cfg(mosquitto.port, keepalive=5))
    sub = subscriber(mosquitto.port, [f"{PREFIX}/availability"])
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/availability")[-1:] == [b"online"], 8), proc.log()
    late = subscriber(mosquitto.port, [f"{PREFIX}/availability"])
    assert late.wait_count(f"{PREFIX}/availability", 1) == [b"online"]
    assert late.messages[0][2] is True, "online must be retained"
    proc.kill()  # SIGKILL: no clean shutdown, only the Last Will can tell
    assert sub.wait_for(lambda s: s.on(f"{PREFIX}/availability")[-1:] == [b"offline"], 5), sub.on(
        f"{PREFIX}/availability"
    )
    after = subscriber(mosquitto.port, [f"{PREFIX}/availability"])
    assert after.wait_count(f"{PREFIX}/availability", 1) == [b"offline"], "the Last Will must be retained"


@pytest.mark.slow
def test_mqtt_events_survive_broker_outage_and_restart(persistent_broker, subscriber, mqtt_cfg, publisher_proc):
    broker = persistent_broker
    # The family's phone: a persistent QoS 1 session that the broker keeps (and queues for) across its restart.
    sub = subscriber(broker.port, [f"{PREFIX}/event"], client_id="family-phone", clean=False)
    cfg = mqtt_cfg(broker.port)
    broker.stop()

    first = publisher_proc(cfg)
    ids = [first.raise_event(kind) for kind in ("fall", "person_down", "recovered")]
    first.kill()  # the daemon dies with the 3 events only in its outbox
    second = publisher_proc(cfg)  # restarted while the broker is still down
    assert wait_until(lambda: "unreachable" in second.log(), 15), second.log()
    broker.start()
    assert sub.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) >= 3, 15), second.log()
    marker = second.raise_event("test")  # sent after the three: anything duplicated arrives before it
    assert sub.wait_for(lambda s: marker in [json.loads(p)["id"] for p in s.on(f"{PREFIX}/event")], 15)
    got = [json.loads(p) for p in sub.on(f"{PREFIX}/event")][:-1]
    assert [e["id"] for e in got] == ids, "lost, duplicated or reordered"
    assert [e["event"] for e in got] == ["fall", "person_down", "recovered"]

    def stats() -> dict:
        second.proc.stdin.write("stats\n")
        second.proc.stdin.flush()
        return json.loads(second.readline())

    assert wait_until(lambda: stats()["events_queued"] == 0, 15), stats()  # the acknowledgements are in
    assert stats()["events_sent"] == 4, stats()
