"""The real daemon on a real fall clip over a real broker: the event's record is kept, `<prefix>/set` feedback
labels it (a bad id or label: one warning, nothing changes), the heartbeat counts the labels; with an unwritable
records directory the fall is still detected and published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

PREFIX = "fallwatch/fb"


def _start(tmp_path: Path, mosquitto, model_dir: Path, data_dir: Path, events_dir: Path, level: str = "INFO") -> tuple:
    clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"
    config = tmp_path / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"name": "hall", "realtime": True, "loop": True},
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": mosquitto.port,
                    "device_id": "fb",
                    "heartbeat_s": 1,
                    "state_dir": str(tmp_path / "state"),
                    "reconnect_max_s": 1,
                },
                "debug": {"enabled": False},
                "events": {"dir": str(events_dir), "pre_s": 2, "post_s": 1},
                "log": {"level": level},
            }
        )
    )
    log_file = tmp_path / "daemon.log"
    env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(clip)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_file, "wb"),
    )
    return proc, log_file


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.slow
def test_mqtt_feedback_labels_the_record_and_counts_in_the_heartbeat(
    mosquitto, subscriber, model_dir, data_dir, tmp_path
):
    events_dir = tmp_path / "events"
    proc, log_file = _start(tmp_path, mosquitto, model_dir, data_dir, events_dir)
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    try:

        def daemon_log() -> str:
            return log_file.read_text(errors="replace")

        assert sub.wait_for(lambda s: any(json.loads(p)["event"] == "fall" for p in s.on(f"{PREFIX}/event")), 40), (
            daemon_log()[-2000:]
        )
        fall = next(e for e in sub.json_on(f"{PREFIX}/event") if e["event"] == "fall")
        meta_path = events_dir / fall["id"] / "event.json"
        assert _wait(meta_path.is_file, 20), daemon_log()[-2000:]

        def label() -> object:
            return json.loads(meta_path.read_text())["label"]

        assert label() is None
        bad = [
            {"feedback": {"id": "no-such-event", "label": "fall"}},
            {"feedback": {"id": fall["id"], "label": "maybe"}},
            {"feedback": "false_alarm"},
        ]
        for command in bad:
            sub.client.publish(f"{PREFIX}/set", json.dumps(command), qos=1)
        assert _wait(lambda: daemon_log().count("ignored feedback") + daemon_log().count('"feedback" must') >= 3, 10), (
            daemon_log()[-2000:]
        )
        assert "no event record with id 'no-such-event'" in daemon_log()
        assert "label must be one of fall, false_alarm, got 'maybe'" in daemon_log()
        assert label() is None
        sub.client.publish(f"{PREFIX}/set", json.dumps({"feedback": {"id": fall["id"], "label": "false_alarm"}}), qos=1)
        assert _wait(lambda: label() == "false_alarm", 10)
        assert sub.wait_for(
            lambda s: any((h.get("labelled") or {}).get("false_alarm") == 1 for h in s.json_on(f"{PREFIX}/heartbeat")),
            5,
        )
        hb = sub.json_on(f"{PREFIX}/heartbeat")[-1]
        assert hb["labelled"] == {"fall": 0, "false_alarm": 1}
        assert proc.poll() is None
    finally:
        _stop(proc)


@pytest.mark.slow
def test_mqtt_unwritable_records_directory_still_detects_and_publishes(
    mosquitto, subscriber, model_dir, data_dir, tmp_path
):
    (tmp_path / "full").write_text("a file where the records directory should be")
    proc, log_file = _start(
        tmp_path, mosquitto, model_dir, data_dir, tmp_path / "full" / "events", level="DEBUG"
    )  # the failed write of the record is a debug line after the warning
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    try:
        assert sub.wait_for(lambda s: any(json.loads(p)["event"] == "fall" for p in s.on(f"{PREFIX}/event")), 40), (
            log_file.read_text(errors="replace")[-2000:]
        )
        assert sub.wait_for(lambda s: any(h["events_sent"] >= 1 for h in s.json_on(f"{PREFIX}/heartbeat")), 5)
        fall = next(e for e in sub.json_on(f"{PREFIX}/event") if e["event"] == "fall")
        assert _wait(lambda: "record of event " + fall["id"] + " not kept" in log_file.read_text(errors="replace"), 15)
        assert proc.poll() is None, "the daemon exited"
        text = log_file.read_text(errors="replace")
        assert text.count("detection and MQTT go on") == 1, text[-3000:]
    finally:
        _stop(proc)
