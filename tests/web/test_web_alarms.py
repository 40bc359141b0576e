"""Open alarms on the debug page: `POST /api/alarms` only from the page itself (the server's guard), and the real
daemon end to end: a real fall clip over a real broker opens an alarm, a notification with a skeleton-only
snapshot reaches a real HTTP endpoint (Apprise json://), the alarm is still open after a restart (state topic,
heartbeat, /api/stats, page), reminds, and the page's "Acknowledge" button, clicked in headless Chromium, closes it
with `resolved` by "page"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import pytest
import yaml
from fallwatch.daemon.alarms.open_alarms import AlarmDesk
from fallwatch.daemon.mqtt.commands import parse_answer
from fallwatch.daemon.records.recorder import PLAIN_BACKGROUND
from notify_endpoint import JsonEndpoint
from testnet import free_port
from waiting import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mqtt"))
from mqtt_testlib import Sub

JSON = {"Content-Type": "application/json"}


def _post(running, body: Any, headers: Optional[dict] = None) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", "/api/alarms", body=data, headers={**JSON, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_post_answers_only_json_from_the_page_itself(start_server):
    running = start_server()
    sent: list[dict] = []
    desk = AlarmDesk(None, 120, lambda e: sent.append(e.to_dict()))
    for i in (1, 2):
        desk.on_event({"event": "fall", "id": f"ev-{i}", "camera": "test-cam", "track": i})

    def answer(body: Any) -> list[dict]:
        problems: list[str] = []
        a = parse_answer(body, problems, by="page")
        if a is None:
            raise ValueError(problems[0] if problems else "no answer")
        return desk.answer(a.target, a.reason, a.by, a.camera)

    running.server.answer = answer
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # the debug server's state-change guard (web/guard.py) applies to this POST as to every other
    status, body = _post(running, b"ack=ev-1", form)  # what a cross-site form can send
    assert status == 415 and b"Content-Type must be application/json" in body
    status, body = _post(running, {"ack": "ev-1"}, {"Origin": "http://evil.example"})
    assert status == 403 and b"is another site than Host" in body
    status, body = _post(running, {"ack": "ev-1"}, {"Host": "attacker.example"})  # DNS rebinding
    assert status == 403
    assert len(desk.open_alarms()) == 2 and sent == []  # nothing answered by those
    status, body = _post(running, {"ack": "nope"})
    assert status == 404 and body == b"no open alarm nope\n"
    status, body = _post(running, {"ack": 3})
    assert status == 400 and b'"ack" must be an event id' in body
    status, body = _post(running, b"{not json")
    assert status == 400
    status, body = _post(running, {"ack": "ev-1"}, {"Origin": f"http://127.0.0.1:{running.port}"})
    assert status == 200 and [a["id"] for a in json.loads(body)["closed"]] == ["ev-1"]
    assert (sent[-1]["event"], sent[-1]["reason"], sent[-1]["by"]) == ("resolved", "ack", "page")
    status, body = _post(running, {"false_alarm": "ev-2"})
    assert status == 200 and sent[-1]["reason"] == "false_alarm" and desk.open_alarms() == []


# ---- the real daemon -------------------------------------------------------------------------------------------
PREFIX = "fallwatch/al"


class Run:
    def __init__(self, tmp_path: Path, model_dir: Path, clip: Path, broker_port: int, notify_url: str, loop: bool):
        self.port = free_port()
        config = tmp_path / "fallwatch.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "camera": {"name": "hall", "realtime": True, "loop": loop},
                    "mqtt": {
                        "host": "127.0.0.1",
                        "port": broker_port,
                        "device_id": "al",
                        "heartbeat_s": 1,
                        "state_dir": str(tmp_path / "state"),
                        "reconnect_max_s": 1,
                    },
                    "debug": {"enabled": True, "bind": f"127.0.0.1:{self.port}"},
                    "events": {"enabled": False},
                    "alerts": {"remind_s": 10},
                    "notify": {"urls": [notify_url], "retry_max_s": 1},
                    "privacy": "skeleton",
                    "log": {"level": "INFO"},
                }
            )
        )
        self.stderr = tmp_path / f"daemon-{'loop' if loop else 'once'}.log"
        env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir), PYTHONUNBUFFERED="1")
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FALLWATCH_CONFIG"):
            env.pop(var, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(clip)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr, "wb"),
            env=env,
        )

    @property
    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stats(self) -> Optional[dict]:
        import http.client

        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3)
            conn.request("GET", "/api/stats")
            return json.loads(conn.getresponse().read())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _events(sub: Sub) -> list[dict]:
    return [json.loads(p) for p in sub.first_copies(f"{PREFIX}/event")]


def _plain_share(jpeg: bytes) -> float:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return float(np.mean(np.all(np.abs(bgr.astype(int) - PLAIN_BACKGROUND) <= 6, axis=2)))


CLICK_ACK = """(async (id) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  for (let i = 0; i < 150; i++) {
    const li = document.querySelector('#alarms li[data-id="' + id + '"]');
    if (li) { li.querySelector("button.ack").click(); break; }
    await sleep(100);
  }
  for (let i = 0; i < 150; i++) {
    if (!document.querySelector('#alarms li[data-id="' + id + '"]')) return "answered";
    await sleep(100);
  }
  return "still open: " + document.getElementById("alarms").textContent;
})(%s)"""


@pytest.mark.slow
def test_daemon_alarm_notified_kept_across_a_restart_reminded_and_acknowledged_on_the_page(
    mosquitto, model_dir, data_dir, tmp_path, chromium_eval
):
    endpoint = JsonEndpoint().up()
    sub = Sub(mosquitto.port, [f"{PREFIX}/#"])
    runs: list[Run] = []
    try:
        fall_clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"
        first = Run(tmp_path, model_dir, fall_clip, mosquitto.port, endpoint.url(), loop=False)
        runs.append(first)
        assert sub.wait_for(lambda s: any(e["event"] == "fall" for e in _events(s)), 90), first.log[-3000:]
        fall = next(e for e in _events(sub) if e["event"] == "fall")
        assert wait_until(lambda: first.proc.poll() is not None, 60), "the daemon did not stop at the clip's end"

        # the fall's notification, with the snapshot: skeletons on the plain background only (privacy: skeleton)
        assert endpoint.wait_count(1, 30), first.log[-3000:]
        note = endpoint.received[0]["body"]
        assert note["title"] == "Fall in hall"
        name, mimetype, jpeg = endpoint.attachment(endpoint.received[0])
        assert mimetype == "image/jpeg" and _plain_share(jpeg) > 0.6

        # Started again (on a clip without a fall, looping): the alarm is still open everywhere it is shown.
        adl_clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "ADL" / "10.mp4"
        second = Run(tmp_path, model_dir, adl_clip, mosquitto.port, endpoint.url(), loop=True)
        runs.append(second)

        def open_ids(alarms: Any) -> list[str]:
            return [a["id"] for a in alarms or []]

        assert wait_until(lambda: fall["id"] in open_ids((second.stats() or {}).get("alarms")), 90), second.log[-3000:]
        assert "still open from before the restart" in second.log
        alarm = next(a for a in second.stats()["alarms"] if a["id"] == fall["id"])
        assert (alarm["camera"], alarm["kind"], alarm["acknowledged"]) == ("hall", "fall", False)
        assert sub.wait_for(
            lambda s: any(fall["id"] in open_ids(json.loads(p).get("alarms")) for p in s.on(f"{PREFIX}/heartbeat")), 30
        )
        assert sub.wait_for(
            lambda s: any(fall["id"] in open_ids(json.loads(p).get("alarms")) for p in s.on(f"{PREFIX}/state") if p),
            30,
        )
        # unanswered: a reminder (remind_s 10), to MQTT and as a notification
        assert sub.wait_for(
            lambda s: any(e["event"] == "reminder" and e["alarm_id"] == fall["id"] for e in _events(s)), 60
        ), second.log[-3000:]
        assert wait_until(lambda: any(t.startswith("Reminder 1: fall in hall") for t in endpoint.titles()), 30)

        # the carer clicks "Acknowledge" on the page
        result = chromium_eval(f"http://127.0.0.1:{second.port}/", CLICK_ACK % json.dumps(fall["id"]), tmp_path)
        assert result == "answered", result
        assert sub.wait_for(
            lambda s: any(e["event"] == "resolved" and e["alarm_id"] == fall["id"] for e in _events(s)), 30
        )
        resolved = next(e for e in _events(sub) if e["event"] == "resolved" and e["alarm_id"] == fall["id"])
        assert (resolved["reason"], resolved["by"]) == ("ack", "page")
        assert wait_until(lambda: fall["id"] not in open_ids((second.stats() or {}).get("alarms")), 10)
        assert wait_until(lambda: "Resolved: fall in hall" in endpoint.titles(), 30)
        assert wait_until(lambda: (second.stats() or {}).get("notify", {}).get("sent", 0) >= 2, 10)
        assert second.stats()["notify"]["failing"] == []
        # no reminder of it after the answer
        n = len([e for e in _events(sub) if e.get("alarm_id") == fall["id"]])
        assert not sub.wait_for(lambda s: len([e for e in _events(s) if e.get("alarm_id") == fall["id"]]) > n, 12)
        # every notification arrived once
        titles = endpoint.titles()
        assert titles.count("Fall in hall") == 1 and titles.count("Resolved: fall in hall") == 1, titles
    finally:
        for run in runs:
            run.stop()
        sub.close()
        endpoint.down()


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
