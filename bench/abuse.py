"""Mixed abuse run (issue 21): every attack of the issue at once against a running ``fallwatch run``.

    make abuse                       # = .venv/bin/python bench/abuse.py --minutes 10
    .venv/bin/python bench/abuse.py --minutes 1 --json

Starts a real mosquitto on a free loopback port and ``fallwatch run`` on a looping dev fall clip (realtime, the
debug page on, event records kept), subscribes to its events and heartbeats, and for ``--minutes`` runs the
attacks side by side, each bounded in rate and all on loopback:

- MQTT: a PUBLISH whose topic is not UTF-8 (mosquitto refuses it from its client: counted), a huge message on
  ``<prefix>/set`` (``--huge-mb``, every 90 s, every other one retained), bursts of bad commands (5,000 every
  20 s), a feedback flood (20 a second, real and made-up ids);
- HTTP: 40 slow bodies (a POST head with ``Content-Length: 4000``, then one byte every 20 s), cross-site label
  requests (foreign Host and Origin, ``text/plain``), a Range header of 4,300 digits (and clients that hang up
  mid-error), 8 clients polling ``/signals``, 5 clips opened at once, ``/api/records?camera=nosuch``;
- records: an ``event.json`` with ``"recorded": null`` and one with ``"t": null`` dropped in the records folder;
- configuration: half-way, a 1 MiB configuration of 17,000 invalid zones and SIGHUP, then the good one back.

First the daemon is watched unattacked for ``--baseline-s`` (60 s): the figures to compare with, on the same machine
in the same run. Watched throughout: falls detected (distinct ids on the subscriber) against the clip's loops, each
event delivered once (copies by id, the broker's DUP re-deliveries apart), ``/healthz`` sampled every second against
what the subscriber sees (a heartbeat within 3 heartbeat periods with frames flowing), the daemon's RSS, fps (from
its heartbeats) and its log. Prints a summary (``--json``: as JSON); exit status 1 when the daemon died, no fall was
detected, an event was delivered twice or /healthz disagreed with what was seen. Image attacks (issue item 5) need
an image-folder source and a full disk needs root: they are not part of this run.
"""

from __future__ import annotations

import argparse
import faulthandler
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from rawmqtt import RawClient, publish_head  # noqa: E402  (the tests' raw-socket MQTT)

DEVICE = "abuse"
PREFIX = f"fallwatch/{DEVICE}"
HEARTBEAT_S = 2.0
DEFAULT_CLIP = Path("gmdcsa24-dev") / "Subject 1" / "Fall" / "13.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def rss_mb(pid: int) -> Optional[float]:
    try:
        match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


class Run:
    """The broker, the daemon, the subscriber and the shared tallies of one abuse run."""

    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.tally: Counter = Counter()  # what the attacks did and what they got back
        self.copies: Counter = Counter()  # event id -> copies delivered (DUP re-deliveries apart)
        self.dups = 0
        self.kinds: dict[str, str] = {}
        self.heartbeats: list[tuple[float, dict]] = []
        self.health: list[tuple[float, Optional[int], bool]] = []  # (time, /healthz status, seen healthy)
        self.rss: list[float] = []
        self.rss_before_config: Optional[float] = None
        self.mqtt_port = free_port()
        self.web_port = free_port()
        self.config = work / "fallwatch.yaml"
        self.records = work / "events"

    # ---- the parts ------------------------------------------------------------------------------------------
    def start_broker(self) -> None:
        conf = self.work / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}")
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.broker = subprocess.Popen(
            [mosquitto, "-c", str(conf)], stdout=open(self.work / "mosquitto.log", "wb"), stderr=subprocess.STDOUT
        )
        wait_port(self.mqtt_port, 10)

    def good_config(self) -> dict:
        return {
            "camera": {"name": "hall", "realtime": True, "loop": True},
            "mqtt": {
                "host": "127.0.0.1",
                "port": self.mqtt_port,
                "device_id": DEVICE,
                "heartbeat_s": HEARTBEAT_S,
                "reconnect_max_s": 2,
                "watchdog_s": 30,
                "state_dir": str(self.work / "state"),
            },
            "debug": {"enabled": True, "bind": f"127.0.0.1:{self.web_port}"},
            "events": {"dir": str(self.records), "pre_s": 2, "post_s": 1, "max_mb": 50},
            "log": {"level": "INFO"},
        }

    def start_daemon(self) -> None:
        self.config.write_text(yaml.safe_dump(self.good_config()))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FALLWATCH_CONFIG"):
            env.pop(var, None)
        self.log_path = self.work / "daemon.log"
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(self.config)]
            + ["--source", str(self.args.clip)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),
            env=env,
        )
        wait_port(self.web_port, 120)

    def start_subscriber(self) -> None:
        self.sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"abuse-sub-{uuid.uuid4().hex[:6]}")
        self.sub.on_connect = lambda c, *_: c.subscribe(
            [(f"{PREFIX}/event", 1), (f"{PREFIX}/heartbeat", 0), (f"{PREFIX}/availability", 1)]
        )
        self.sub.on_message = self._on_message
        self.sub.connect("127.0.0.1", self.mqtt_port)
        self.sub.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/heartbeat"):
            with self.lock:
                self.heartbeats.append((time.monotonic(), json.loads(msg.payload)))
        elif msg.topic.endswith("/event"):
            event = json.loads(msg.payload)
            with self.lock:
                if msg.dup and self.copies[event["id"]]:
                    self.dups += 1  # the broker's own re-delivery (its PUBACK lost): not the daemon's doing
                else:
                    self.copies[event["id"]] += 1
                self.kinds[event["id"]] = event["event"]

    def event_ids(self) -> list[str]:
        with self.lock:
            return list(self.kinds)

    def http(
        self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None, timeout: float = 5
    ) -> Optional[int]:
        """The status, or None when the daemon did not answer (refused, reset, timed out)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.tally[key] += n

    def every(self, period_s: float, action: Callable[[], None], name: str) -> threading.Thread:
        """Run ``action`` every ``period_s`` until the run stops; a failing attack is counted, never fatal."""

        def loop() -> None:
            while not self.stop.is_set():
                try:
                    action()
                except Exception as exc:
                    self.count(f"{name}: attack failed ({type(exc).__name__})")
                self.stop.wait(period_s)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    # ---- MQTT attacks ---------------------------------------------------------------------------------------
    def bad_topic(self) -> None:
        raw = RawClient(self.mqtt_port, f"badtopic-{uuid.uuid4().hex[:6]}")
        raw.publish(b"\xff\xfe" + f"{PREFIX}/set".encode(), b'{"alerts": false}')
        self.count("mqtt bad topic: sent")
        self.count("mqtt bad topic: broker kept the sender" if raw.alive() else "mqtt bad topic: broker refused it")
        raw.close()

    def huge(self) -> None:
        retain = self.tally["mqtt huge: sent"] % 2 == 1
        raw = RawClient(self.mqtt_port, f"huge-{uuid.uuid4().hex[:6]}", timeout=120)
        raw.publish_stream(f"{PREFIX}/set".encode(), self.args.huge_mb << 20, retain=retain)
        raw.close()
        self.count("mqtt huge: sent")
        if retain:
            self.count("mqtt huge: retained")

    def bad_commands(self) -> None:
        raw = RawClient(self.mqtt_port, f"flood-{uuid.uuid4().hex[:6]}", timeout=60)
        junk = [b"junk", b"[1,2]", b'{"alerts": "maybe"}', b'{"pause": 5}', b"\xff\xfe", b"{" * 200]
        data = b"".join(publish_head(f"{PREFIX}/set".encode(), len(j)) + j for j in junk * 834)
        raw.sock.sendall(data)
        raw.close()
        self.count("mqtt bad commands: sent", len(junk) * 834)

    def feedback(self) -> None:
        ids = self.event_ids()
        raw = RawClient(self.mqtt_port, f"feedback-{uuid.uuid4().hex[:6]}")
        for _ in range(20):
            event_id = random.choice(ids) if ids and random.random() < 0.5 else str(uuid.uuid4())
            label = random.choice(["fall", "false_alarm"])
            raw.publish(f"{PREFIX}/set".encode(), json.dumps({"feedback": {"id": event_id, "label": label}}).encode())
        raw.close()
        self.count("mqtt feedback: sent", 20)

    # ---- HTTP attacks ---------------------------------------------------------------------------------------
    def slow_bodies(self) -> None:
        """40 connections that each drip a POST body, one byte every 20 s; one closed by the server is reopened."""
        socks: list[socket.socket] = []
        while not self.stop.is_set():
            while len(socks) < 40:
                try:
                    s = socket.create_connection(("127.0.0.1", self.web_port), 5)
                    s.sendall(
                        b"POST /api/records/x/label HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
                    )
                    socks.append(s)
                    self.count("http slow body: opened")
                except OSError:
                    self.count("http slow body: refused")
                    break
            self.stop.wait(20)
            for s in list(socks):
                try:
                    s.sendall(b"{")
                except OSError:
                    socks.remove(s)
                    s.close()
                    self.count("http slow body: closed by the server")
        for s in socks:
            s.close()

    def cross_site(self) -> None:
        ids = self.event_ids() or ["x"]
        status = self.http(
            "POST",
            f"/api/records/{random.choice(ids)}/label",
            b'{"label": "false_alarm"}',
            {"Host": "attacker.example", "Origin": "http://attacker.example", "Content-Type": "text/plain"},
        )
        self.count(f"http cross-site label: {status}")

    def range_digits(self) -> None:
        ids = self.event_ids() or ["x"]
        path = f"/api/records/{random.choice(ids)}/clip"
        status = self.http("GET", path, headers={"Range": "bytes=" + "9" * 4300 + "-"})
        self.count(f"http range of 4300 digits: {status}")
        with socket.create_connection(("127.0.0.1", self.web_port), 5) as s:  # and hang up at once
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=x-y\r\n\r\n".encode())
        self.count("http hang-ups mid-error")

    def signals(self) -> None:
        ids = self.event_ids()
        if ids:
            status = self.http("GET", f"/api/records/{random.choice(ids)}/signals", timeout=30)
            self.count(f"http signals: {status}")

    def clips(self) -> None:
        def view(event_id: str) -> None:
            self.count(f"http clip: {self.http('GET', f'/api/records/{event_id}/clip', timeout=60)}")

        threads = [threading.Thread(target=view, args=(i,)) for i in self.event_ids()[-5:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def nosuch(self) -> None:
        self.count(f"http records?camera=nosuch: {self.http('GET', '/api/records?camera=nosuch')}")

    # ---- records and configuration ----------------------------------------------------------------------------
    def bad_records(self) -> None:
        for field, value in (("recorded", None), ("t", None)):
            folder = self.records / str(uuid.uuid4())
            folder.mkdir(parents=True, exist_ok=True)
            meta = {"id": folder.name, "event": "fall", "camera": "hall", "recorded": time.time(), "t": 1.0}
            meta[field] = value
            (folder / "event.json").write_text(json.dumps(meta))
        self.count(f"records: bad event.json then /api/records {self.http('GET', '/api/records')}")

    def huge_config(self) -> None:
        """Once, half-way: 1 MiB of invalid zones and SIGHUP; 20 s later the good file back and SIGHUP."""
        if self.stop.wait(self.args.minutes * 30):
            return
        zones = [{"name": f"z{i}", "kind": "rest", "points": [[2, 2], [3, 3]]} for i in range(17000)]
        bad = dict(self.good_config(), zones=zones)  # no YAML aliases: each zone written out
        self.config.write_text(yaml.safe_dump(bad, default_flow_style=True)[: 1 << 20])
        self.rss_before_config = rss_mb(self.daemon.pid)
        self.daemon.send_signal(signal.SIGHUP)
        self.count("config: 1 MiB invalid + SIGHUP")
        self.stop.wait(20)
        self.config.write_text(yaml.safe_dump(self.good_config()))
        self.daemon.send_signal(signal.SIGHUP)

    # ---- watching ---------------------------------------------------------------------------------------------
    def seen_healthy(self, now: float) -> bool:
        """What the subscriber sees: heartbeats (MQTT delivers) within 3 periods, one of them with frames flowing
        (its fps goes to 0 when no frame came for 2 s; /healthz allows 5 s)."""
        with self.lock:
            recent = [hb for at, hb in self.heartbeats if now - at <= 3 * HEARTBEAT_S]
        return any((hb.get("fps") or 0) > 0 for hb in recent)

    def sample(self) -> None:
        status, reason = None, "no answer"
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=3)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            try:
                reason = json.loads(body).get("reason") or "ok"
            except ValueError:
                reason = body[:60].decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        now = time.monotonic()
        seen = self.seen_healthy(now)
        reason = re.sub(r"[\d.]+ s\b", "N s", reason)  # one count per kind of reason, not per figure
        with self.lock:
            self.health.append((now, status, seen))
            self.tally[f"healthz {status}: {reason}"] += 1
        rss = rss_mb(self.daemon.pid)
        if rss is not None:
            self.rss.append(rss)


def clip_seconds(clip: Path) -> Optional[float]:
    try:
        import cv2

        cap = cv2.VideoCapture(str(clip))
        frames, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        return frames / fps if fps else None
    except Exception:
        return None


def mean_fps(run: Run, since: float, until: float) -> Optional[float]:
    """The mean of the heartbeats' fps (0 while frames stall for 2 s) between two moments."""
    fps = [hb.get("fps") or 0 for at, hb in run.heartbeats if since <= at < until]
    return round(statistics.mean(fps), 2) if fps else None


def summary(run: Run, baseline: tuple[float, int], started: float, ended: float, rc: Optional[int]) -> dict:
    falls = [i for i, kind in run.kinds.items() if kind == "fall"]
    base_fps = mean_fps(run, baseline[0], started)
    attack_fps = mean_fps(run, started, ended)
    twice = {i: n for i, n in run.copies.items() if n > 1}
    # /healthz against what was seen: only where the view had been steady for 10 s (heartbeats lag a little)
    steady = []
    for at, status, seen in run.health:
        before = [s for t, _, s in run.health if at - 10 <= t <= at]
        if all(s == seen for s in before):
            steady.append((status, seen))
    disagree = sum(1 for status, seen in steady if (status == 200) != seen)
    log = run.log_path.read_text(errors="replace").splitlines()
    loops = None
    length = clip_seconds(run.args.clip)
    if length:
        loops = round((ended - started) / length, 1)
    return {
        "minutes": round((ended - started) / 60, 2),
        "daemon_alive_at_end": rc is None,
        "baseline_s": round(started - baseline[0], 1),
        "falls_detected_in_baseline": baseline[1],
        "falls_detected_under_attack": len(falls) - baseline[1],
        "clip_loops": loops,
        "events_delivered": len(run.copies),
        "events_delivered_twice": len(twice),
        "broker_dup_redeliveries": run.dups,
        "healthz": {
            "samples": len(run.health),
            "200": sum(1 for _, s, _ in run.health if s == 200),
            "503": sum(1 for _, s, _ in run.health if s == 503),
            "no_answer": sum(1 for _, s, _ in run.health if s is None),
            "seen_healthy": sum(1 for _, _, seen in run.health if seen),
            "disagreeing_steady_samples": disagree,
        },
        "rss_mb": {
            "first": round(run.rss[0], 1) if run.rss else None,
            "before_config_attack": None if run.rss_before_config is None else round(run.rss_before_config, 1),
            "max": round(max(run.rss), 1) if run.rss else None,
            "last": round(run.rss[-1], 1) if run.rss else None,
        },
        "fps_mean": {
            "baseline_no_attacks": base_fps,
            "under_attack": attack_fps,
            "ratio": round(attack_fps / base_fps, 2) if base_fps and attack_fps is not None else None,
        },
        "log_lines": len(log),
        "log_warning_or_worse": sum(1 for line in log if re.search(r" (WARNING|ERROR|CRITICAL) ", line)),
        "log_tracebacks": sum(1 for line in log if line.startswith("Traceback")),
        "attacks": dict(sorted(run.tally.items())),
    }


def main(argv: Optional[list[str]] = None) -> int:
    data = Path(os.environ.get("FALLWATCH_DATA_DIR") or REPO.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the attacks last (default 10)")
    parser.add_argument("--clip", type=Path, default=data / DEFAULT_CLIP, help="the looping fall clip")
    parser.add_argument("--huge-mb", type=int, default=200, help="size of the huge MQTT message (default 200)")
    parser.add_argument("--baseline-s", type=float, default=60.0, help="seconds watched before the attacks (60)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, records)")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where each thread is
    if not args.clip.is_file():
        parser.error(f"--clip {args.clip}: no such file (the dev clips live in ../shared/data)")
    if not os.environ.get("FALLWATCH_MODEL_DIR") and (REPO.parent / "shared" / "models").is_dir():
        os.environ["FALLWATCH_MODEL_DIR"] = str(REPO.parent / "shared" / "models")
    work = Path(tempfile.mkdtemp(prefix="fallwatch-abuse-"))
    run = Run(args, work)
    rc: Optional[int] = None
    try:
        run.start_broker()
        run.start_subscriber()
        run.start_daemon()
        deadline = time.monotonic() + 120
        while not run.seen_healthy(time.monotonic()) and time.monotonic() < deadline:
            time.sleep(0.5)  # frames flowing and heartbeats arriving before the attacks begin
        baseline_at = time.monotonic()  # the same daemon on the same machine, not attacked: what to compare with
        print(f"abuse run: {args.baseline_s:g} s baseline, then {args.minutes:g} min, in {work}", file=sys.stderr)
        time.sleep(args.baseline_s)
        baseline = (baseline_at, sum(1 for kind in list(run.kinds.values()) if kind == "fall"))
        started = time.monotonic()
        run.every(1.0, run.sample, "sample")
        run.every(5, run.bad_topic, "bad topic")
        run.every(90, run.huge, "huge")
        run.every(20, run.bad_commands, "bad commands")
        run.every(1, run.feedback, "feedback")
        run.every(0, run.slow_bodies, "slow bodies")
        run.every(5, run.cross_site, "cross site")
        run.every(5, run.range_digits, "range")
        for n in range(8):
            run.every(0.2, run.signals, f"signals {n}")
        run.every(30, run.clips, "clips")
        run.every(10, run.nosuch, "nosuch")
        run.every(60, run.bad_records, "records")
        threading.Thread(target=run.huge_config, daemon=True).start()
        while time.monotonic() - started < args.minutes * 60 and run.daemon.poll() is None:
            time.sleep(1)
        run.stop.set()
        ended = time.monotonic()
        time.sleep(2 * HEARTBEAT_S)  # events raised at the end are delivered
        rc = run.daemon.poll()
        result = summary(run, baseline, started, ended, rc)
    finally:
        run.stop.set()
        if run.__dict__.get("daemon") is not None and run.daemon.poll() is None:
            run.daemon.terminate()
            try:
                run.daemon.wait(15)
            except subprocess.TimeoutExpired:
                run.daemon.kill()
        if run.__dict__.get("sub") is not None:
            run.sub.disconnect()
        if run.__dict__.get("broker") is not None:
            run.broker.terminate()
            run.broker.wait(10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    healthz = result["healthz"]
    ok = (
        result["daemon_alive_at_end"]
        and result["falls_detected_under_attack"] > 0
        and result["events_delivered_twice"] == 0
        and healthz["disagreeing_steady_samples"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
