"""The running daemon (`fallwatch run` on a looping fall clip, the page on) survives a broker that sends a topic
that is not UTF-8, and says MQTT is down on /healthz (503 naming mqtt) and in the systemd status once the broker
has been gone longer than mqtt.watchdog_s; both are healthy again when it is back. The broker is a raw one
(tests/rawmqtt.py): mosquitto refuses such a topic from its clients."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from rawmqtt import OneClientBroker, publish_head
from testnet import free_port
from waiting import wait_until

PREFIX = "fallwatch/guard"


def _healthz(port: int) -> tuple[int, dict]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    except (OSError, ValueError):
        return 0, {}


@pytest.mark.slow
def test_daemon_survives_a_bad_topic_and_healthz_says_when_mqtt_is_down(tmp_path: Path, model_dir, data_dir):
    clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"
    web = free_port()
    broker = OneClientBroker()
    config = tmp_path / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"name": "hall", "realtime": True, "loop": True},
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "device_id": "guard",
                    "reconnect_max_s": 1,
                    "watchdog_s": 3,
                    "homeassistant": {"enabled": False},
                },
                "debug": {"enabled": True, "bind": f"127.0.0.1:{web}"},
                "events": {"enabled": False},
            }
        )
    )
    statuses: list[str] = []
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))

    def read_status() -> None:  # what systemd keeps of sd_notify
        while True:
            try:
                statuses.append(notify.recv(4096).decode())
            except OSError:
                return

    threading.Thread(target=read_status, daemon=True).start()
    env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir), NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    for var in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FALLWATCH_CONFIG"):
        env.pop(var, None)
    log_file = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(clip)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_file, "wb"),
    )

    def log() -> str:
        return log_file.read_text(errors="replace")[-3000:]

    try:
        broker.accept(60)
        assert wait_until(lambda: f"{PREFIX}/set".encode() in broker.subscribed, 20), log()
        assert wait_until(lambda: _healthz(web)[0] == 200, 60), log()
        bad = json.dumps({"alerts": False}).encode()
        broker.send(publish_head(b"\xff\xfe" + f"{PREFIX}/set".encode(), len(bad)) + bad)
        test = json.dumps({"test": True}).encode()
        broker.send(publish_head(f"{PREFIX}/set".encode(), len(test)) + test)
        assert wait_until(lambda: broker.payloads(f"{PREFIX}/event".encode()), 20), log()
        assert json.loads(broker.payloads(f"{PREFIX}/event".encode())[0])["event"] == "test"
        assert "topic is not UTF-8" in log() and "Traceback" not in log()

        broker.close()  # the broker is gone: reconnects are refused
        assert wait_until(lambda: _healthz(web)[0] == 503, 30), log()
        status, body = _healthz(web)
        assert "mqtt" in body["unhealthy"] and body["reason"].startswith("mqtt: cannot deliver alerts"), body
        assert body["cameras"]["hall"]["healthy"], "the camera is fine: only MQTT is down"
        assert wait_until(lambda: any("MQTT DOWN" in s for s in statuses), 20), statuses[-3:]

        broker = OneClientBroker(broker.port)  # back, on the same port
        broker.accept(30)
        assert wait_until(lambda: _healthz(web)[0] == 200, 30), log()
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        broker.close()
        notify.close()
