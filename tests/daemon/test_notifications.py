"""Notifications through Apprise against a real HTTP endpoint started by the test (``json://`` to a local server):
the request, its title, body and attached snapshot; retries while the endpoint is down; nothing lost and nothing
sent twice, also across a restart; one service down never makes another receive twice; `fallwatch notify --test`;
URLs Apprise cannot use are refused in one line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fallwatch.config.loader import ConfigError, load_config
from fallwatch.config.schema import NotifyConfig
from fallwatch.daemon.alarms.notifications import Notifications, NotifyError, notify_urls
from notify_endpoint import JsonEndpoint
from waiting import wait_until

JPEG = bytes(cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1])


def fall(id_: str = "ev-1", kind: str = "fall", **extra) -> dict:
    return {"event": kind, "id": id_, "camera": "hall", "ts": "2027-01-15T08:00:00.000Z", "track": 1, **extra}


@pytest.fixture
def queues(tmp_path: Path):
    made: list[Notifications] = []

    def make(*urls: str) -> Notifications:
        n = Notifications(NotifyConfig(urls=list(urls), retry_max_s=1), tmp_path / "state")
        made.append(n)
        n.start()
        return n

    yield make
    for n in made:
        n.stop()
        n.close()


@pytest.fixture
def endpoints():
    made: list[JsonEndpoint] = []

    def make() -> JsonEndpoint:
        made.append(JsonEndpoint())
        return made[-1]

    yield make
    for e in made:
        e.down()


def test_a_fall_arrives_with_its_words_and_snapshot(queues, endpoints):
    ep = endpoints().up()
    q = queues(ep.url())
    assert q.enqueue(fall(), JPEG) == 1
    assert ep.wait_count(1)
    (got,) = ep.received
    assert got["path"] == "/notify"
    assert got["body"]["title"] == "Fall in hall"
    assert "A fall was seen in hall" in got["body"]["message"] and got["body"]["type"] == "failure"
    assert ep.attachment(got) == ("snapshot.jpg", "image/jpeg", JPEG)
    assert wait_until(lambda: len(q) == 0)


def test_down_endpoint_retried_nothing_lost_nothing_twice_across_a_restart(queues, endpoints, caplog):
    caplog.set_level(logging.INFO)
    ep = endpoints()  # nothing listens on its port yet
    q = queues(ep.url())
    q.enqueue(fall("f1"), JPEG)
    assert q.enqueue(fall("f1"), JPEG) == 0  # an event already queued is not queued twice
    q.enqueue(fall("r1", "reminder", level=1, alarm_id="f1", alarm_kind="fall"), JPEG)
    assert wait_until(lambda: "did not take the fall notification f1" in caplog.text, 20)
    assert wait_until(lambda: q.failed_attempts >= 2, 20)  # retried
    assert q.figures() == {"queued": 2, "sent": 0, "failing": [f"json://127.0.0.1:{ep.port}/..."]}  # for the page
    q.stop()  # the daemon stops with both queued

    q2 = queues(ep.url())  # ... and starts again; the endpoint is still down
    q2.enqueue(fall("x1", "resolved", reason="ack", by="Anna", alarm_id="f1", alarm_kind="fall"))
    assert len(q2) == 3
    ep.up()
    assert ep.wait_count(3, 30)
    assert wait_until(lambda: len(q2) == 0, 20)  # every row delivered and deleted: nothing can be sent again
    assert q2.figures() == {"queued": 0, "sent": 3, "failing": []}
    assert ep.titles() == ["Fall in hall", "Reminder 1: fall in hall", "Resolved: fall in hall"]
    assert "acknowledged by Anna" in ep.received[2]["body"]["message"]
    assert ep.received[2]["body"]["attachments"] == []  # none given
    assert "notify: 2 notification(s) queued from before" in caplog.text


def test_one_service_down_does_not_make_another_receive_twice(queues, endpoints):
    up, down = endpoints().up(), endpoints()
    q = queues(up.url("a"), down.url("b"))
    q.enqueue(fall("f1"), JPEG)
    assert up.wait_count(1)
    assert wait_until(lambda: q.failed_attempts >= 2, 20)
    down.up()
    assert down.wait_count(1, 30)
    assert wait_until(lambda: len(q) == 0, 20)
    assert len(up.received) == 1 and len(down.received) == 1


def _config(tmp_path: Path, notify: dict) -> Path:
    path = tmp_path / "fallwatch.yaml"
    path.write_text(yaml.safe_dump({"mqtt": {"enabled": False}, "notify": notify}))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_notify_test_sends_one_to_every_url(tmp_path, endpoints, monkeypatch):
    ep = endpoints().up()
    urls_file = tmp_path / "urls"
    urls_file.write_text(f"# the family's phones\n{ep.url('from-file')}\n")
    monkeypatch.setenv("FW_TEST_NOTIFY_URL", ep.url("from-env"))  # a secret from the environment
    config = _config(tmp_path, {"urls": ["${FW_TEST_NOTIFY_URL}"], "urls_file": str(urls_file)})
    done = _cli("notify", "--test", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("sent: json://127.0.0.1:") == 2
    assert ep.wait_count(2)
    assert sorted(r["path"] for r in ep.received) == ["/from-env", "/from-file"]
    assert ep.titles() == ["fallwatch test", "fallwatch test"]
    ep.down()
    config = _config(tmp_path, {"urls": [ep.url()]})
    done = _cli("notify", "--test", "--config", str(config))
    assert done.returncode == 1 and "FAILED: json://127.0.0.1:" in done.stdout


def test_check_config_masks_the_urls(tmp_path):
    from fallwatch.config.loader import effective_config_yaml

    shown = effective_config_yaml(load_config(_config(tmp_path, {"urls": ["tgram://123456:SECRETTOKEN/987"]})))
    assert "SECRETTOKEN" not in shown and "notify:" in shown


def test_urls_apprise_cannot_use_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, {"urls": ["json://127.0.0.1/x", "nonsense://x"]}))
    assert any(
        "notify.urls: urls[1]: not an Apprise URL" in line and "fallwatch.yaml:" in line for line in info.value.errors
    )
    assert "nonsense" in "".join(info.value.errors)  # the scheme is named; a token in the URL would not be
    bad = tmp_path / "urls"
    bad.write_text("json://127.0.0.1/ok\nmailto\n")
    with pytest.raises(NotifyError, match=r"urls:2: not an Apprise URL"):
        notify_urls(NotifyConfig(urls_file=str(bad)))
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, {"urls_file": str(tmp_path / "missing")}))
    assert any("notify.urls_file: cannot read" in line for line in info.value.errors)
