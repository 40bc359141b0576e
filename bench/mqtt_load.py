"""MQTT load test: N fallwatch devices (the real MqttPublisher and SQLite outbox) on one local mosquitto.

    make mqtt-load N=200            # = .venv/bin/python bench/mqtt_load.py --devices 200

Each simulated device is a real ``MqttPublisher`` with its own device id and its own outbox (state dir), fed
synthetic fall events shaped like the daemon's instead of a camera: a heartbeat every second and, by default, one
event per second per device (real life: a few a day). The devices run as threads in a few worker processes
(``--processes``, default one per 50 devices) so that 200 of them fit on 2 cores. One subscriber (a persistent
session, QoS 1) records every event on ``fallwatch/+/event``. Half-way through, the broker (persistent, as a real
one is) is stopped for ``--outage`` seconds and started again on the same port.

It prints: events delivered (every id the publishers queued, each counted once) and duplicates (at-least-once
re-sends after the restart), publish -> subscriber latency p50/p99 (steady state, before the restart, and over all
events), the broker's CPU (from /proc/<pid>/stat) and what the restart did: events published during the outage,
time until every device was back online, and until the backlog had arrived. Exit status 1 if any event was lost.
The machine is shared: compare runs made one after the other, not with figures from elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
DEVICES_PER_PROCESS = 50
FDS_PER_DEVICE = 8  # paho socket + its wake-up socket pair, the outbox's db, -wal and -shm, some slack

# A fall event as the daemon publishes it (the README's example); id, ts and t_pub are set per event.
EVENT_TEMPLATE = {
    "event": "fall",
    "source": "camera",
    "t": 1.984,
    "frame": 58,
    "track": 1,
    "confidence": 0.6,
    "spine_angle_deg": 24.3,
    "angle_change_deg": 21.3,
    "descent_rate": 0.84,
    "box": [213.6, 318.7, 405.0, 476.5],
}


def raise_fd_limit(needed: int) -> int:
    """Lift the soft limit on open files to the hard one (the broker and the workers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        sys.exit(
            f"mqtt_load: needs about {needed} open files but the hard limit (ulimit -Hn) is {target}; "
            f"raise it or use fewer --devices"
        )
    return target


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# ------------------------------------------------------------------------------------------------ worker process
def worker(
    index: int,
    port: int,
    devices: list[str],
    state_root: str,
    rate: float,
    processes: int,
    ready: Any,
    go: Any,
    results: Any,
    stop: Any,
    log_file: str,
) -> None:
    """One process: ``devices`` publishers as threads; queues events on schedule; reports the ids it queued."""
    logging.basicConfig(
        level=logging.WARNING, filename=log_file, format=f"%(asctime)s w{index} %(levelname)s %(name)s: %(message)s"
    )
    from fallwatch.config.schema import MqttConfig
    from fallwatch.daemon.mqtt.publisher import MqttPublisher
    from fallwatch.daemon.telemetry.builder import SnapshotBuilder
    from fallwatch.rules.events import utc_now_iso

    pubs = []
    for device in devices:
        cfg = MqttConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": port,
                "device_id": device,
                "state_dir": str(Path(state_root) / device),
                "heartbeat_s": 1,
                "reconnect_max_s": 1,
                "outbox_max": 100000,
            }
        )
        figures = SnapshotBuilder("load-test", ["camera"])  # a daemon's figures: the backend (MQTT adds its own)
        figures.provide("engine", lambda now: {"backend": "cpu"})
        pub = MqttPublisher(cfg, camera="camera", version="load-test", figures=figures)
        pub.start()
        pubs.append(pub)
    deadline = time.monotonic() + 60
    while not all(p.connected for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    ready.put((index, sum(p.connected for p in pubs)))
    start_at, duration = go.get()

    # Evenly spread: event j of this worker goes to device j % n at start + (j + index / processes) / (n * rate).
    n = len(pubs)
    queued: list[tuple[str, str]] = []
    max_lag = 0.0
    total = int(duration * rate * n)
    for j in range(total):
        due = start_at + (j + index / processes) / (n * rate)
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            max_lag = max(max_lag, -wait)
        pub = pubs[j % n]
        event = dict(EVENT_TEMPLATE, id=str(uuid.uuid4()), ts=utc_now_iso(), t_pub=time.monotonic())
        pub.publish_event(event)
        queued.append((pub.device_id, event["id"]))
    results.put({"worker": index, "queued": queued, "max_lag_s": round(max_lag, 3)})
    stop.wait()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda p: p.stop(), pubs))
    results.put({"worker": index, "left_in_outboxes": sum(p.stats()["events_queued"] for p in pubs)})


# ------------------------------------------------------------------------------------------------ subscriber
class Recorder:
    """A persistent-session subscriber: first arrival (and count) of every event id, heartbeats, reconnects."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.first: dict[str, tuple[float, float]] = {}  # id -> (arrival, t_pub)
        self.duplicates = 0
        self.heartbeats = 0
        self.online: dict[str, float] = {}  # device -> arrival of its last "online"
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"load-sub-{uuid.uuid4().hex[:6]}", clean_session=False
        )
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            sys.exit("mqtt_load: the subscriber could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if flags.session_present:
            return  # the broker kept the subscriptions (and queued QoS 1 messages); subscribing again would
            #          replay the retained availability messages
        client.subscribe([("fallwatch/+/event", 1), ("fallwatch/+/heartbeat", 0), ("fallwatch/+/availability", 1)])

    def _on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        kind = msg.topic.rsplit("/", 1)[1]
        with self.lock:
            if kind == "heartbeat":
                self.heartbeats += 1
            elif kind == "availability":
                if msg.payload == b"online":
                    self.online[msg.topic.split("/")[1]] = now
            else:
                event = json.loads(msg.payload)
                if event["id"] in self.first:
                    self.duplicates += 1
                else:
                    self.first[event["id"]] = (now, event["t_pub"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------------------------------------------ main
def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", "-n", type=int, default=50, help="simulated devices (default 50)")
    ap.add_argument(
        "--processes", type=int, default=None, help=f"worker processes (default one per {DEVICES_PER_PROCESS} devices)"
    )
    ap.add_argument("--duration", type=float, default=40.0, help="seconds of events (default 40)")
    ap.add_argument("--rate", type=float, default=1.0, help="events per second per device (default 1)")
    ap.add_argument("--outage", type=float, default=3.0, help="seconds the broker is down mid-run (0: no restart)")
    ap.add_argument("--drain", type=float, default=120.0, help="longest wait for the last events (default 120 s)")
    ap.add_argument("--state-dir", default=None, help="where the outboxes and the broker live (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    if args.devices < 1 or args.duration <= 0 or args.rate <= 0:
        ap.error("--devices, --duration and --rate must be positive")
    processes = args.processes or math.ceil(args.devices / DEVICES_PER_PROCESS)
    processes = max(1, min(processes, args.devices))

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import Mosquitto, mosquitto_binary  # the tests' real broker on a free loopback port

    try:
        mosquitto_binary()
    except BaseException as exc:  # pytest's fail() outside pytest: say it in one line
        sys.exit(f"mqtt_load: {exc}")
    fd_limit = raise_fd_limit(args.devices * FDS_PER_DEVICE // processes + args.devices + 256)
    workdir = Path(tempfile.mkdtemp(prefix="fallwatch-mqtt-load-", dir=args.state_dir))
    broker = Mosquitto(
        workdir,
        persistent=True,
        extra_conf=(
            "allow_anonymous true\n"
            "max_connections -1\n"  # no limit beyond the open-files limit raised above
            "max_queued_messages 1000000\n"  # the subscriber's backlog across the restart must not be cut
            "max_inflight_messages 100\n"
        ),
    ).start()
    log = workdir / "workers.log"
    ctx = mp.get_context("spawn")
    ready, go, results, stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    names = [f"load-{i:03d}" for i in range(args.devices)]
    procs = [
        ctx.Process(
            target=worker,
            daemon=True,
            args=(
                w,
                broker.port,
                names[w::processes],
                str(workdir / "state"),
                args.rate,
                processes,
                ready,
                go,
                results,
                stop,
                str(log),
            ),
        )
        for w in range(processes)
    ]
    recorder = Recorder(broker.port)
    report: dict[str, Any] = {
        "devices": args.devices,
        "processes": processes,
        "duration_s": args.duration,
        "rate_per_device": args.rate,
        "heartbeat_s": 1,
        "open_files_limit": fd_limit,
    }
    try:
        t0 = time.monotonic()
        for proc in procs:
            proc.start()
        connected = sum(ready.get(timeout=120)[1] for _ in procs)
        if connected < args.devices:
            print(f"mqtt_load: only {connected} of {args.devices} devices connected; see {log}", file=sys.stderr)
            return 1
        report["startup_s"] = round(time.monotonic() - t0, 1)
        start_at = time.monotonic() + 1.0
        for _ in procs:
            go.put((start_at, args.duration))
        cpu_before = cpu_seconds(broker.proc.pid)
        stop_at = start_at + args.duration / 2
        outage: dict[str, float] = {}
        broker_cpu = 0.0
        if args.outage > 0:
            time.sleep(max(0.0, stop_at - time.monotonic()))
            cpu_now = cpu_seconds(broker.proc.pid)
            report["broker_cpu_steady_pct"] = round(100 * (cpu_now - cpu_before) / (time.monotonic() - start_at), 1)
            broker_cpu += cpu_now - cpu_before
            outage["stopped"] = time.monotonic()
            broker.stop()  # SIGTERM: mosquitto saves its sessions and queued messages, as on a system restart
            time.sleep(max(0.0, outage["stopped"] + args.outage - time.monotonic()))
            broker.start()
            outage["started"] = time.monotonic()
            cpu_before = cpu_seconds(broker.proc.pid)
        queued: list[tuple[str, str]] = []
        max_lag = 0.0
        for _ in procs:
            got = results.get(timeout=args.duration + 120)
            queued += got["queued"]
            max_lag = max(max_lag, got["max_lag_s"])
        end_of_events = time.monotonic()
        expected = {event_id for _, event_id in queued}
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            with recorder.lock:
                if expected.issubset(recorder.first):
                    break
            time.sleep(0.1)
        drained = time.monotonic()
        broker_cpu += cpu_seconds(broker.proc.pid) - cpu_before
        run_s = drained - start_at - (outage["started"] - outage["stopped"] if outage else 0.0)
        report["broker_cpu_pct"] = round(100 * broker_cpu / run_s, 1)
        stop.set()
        left = sum(results.get(timeout=60)["left_in_outboxes"] for _ in procs)
        with recorder.lock:
            first = dict(recorder.first)
            duplicates, heartbeats, online = recorder.duplicates, recorder.heartbeats, dict(recorder.online)
    finally:
        stop.set()
        recorder.close()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        broker.stop()

    delivered = expected & set(first)
    latencies = [first[i][0] - first[i][1] for i in delivered]
    report.update(
        {
            "events_expected": len(expected),
            "events_delivered": len(delivered),
            "events_lost": len(expected - delivered),
            "duplicates": duplicates,
            "unexpected_ids": len(set(first) - expected),
            "left_in_outboxes": left,
            "events_per_s": round(len(expected) / args.duration, 1),
            "max_schedule_lag_s": max_lag,
            "heartbeats_received": heartbeats,
            "latency_ms": {
                "p50": _ms(percentile(latencies, 50)),
                "p99": _ms(percentile(latencies, 99)),
                "max": _ms(max(latencies, default=None)),
            },
            "drain_after_last_event_s": round(drained - end_of_events, 2),
        }
    )
    if outage:
        steady = [first[i][0] - first[i][1] for i in delivered if first[i][1] < outage["stopped"] - 1.0]
        during = [i for i in delivered if outage["stopped"] <= first[i][1] < outage["started"]]
        back = [t for t in online.values() if t > outage["stopped"]]  # a device may beat wait_for_port
        report["latency_steady_ms"] = {"p50": _ms(percentile(steady, 50)), "p99": _ms(percentile(steady, 99))}
        report["restart"] = {
            "outage_s": round(outage["started"] - outage["stopped"], 2),
            "events_published_during_outage": len(during),
            "devices_back_online": len(back),
            "all_online_after_s": round(max(0.0, max(back) - outage["started"]), 2)
            if len(back) == args.devices
            else None,
            "backlog_delivered_after_s": round(
                max((first[i][0] for i in during), default=outage["started"]) - outage["started"], 2
            ),
        }
    print(json.dumps(report, indent=2) if args.json else _text(report))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["events_lost"] == 0 else 1


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(1000 * seconds, 1)


def _text(r: dict) -> str:
    lines = [
        f"devices {r['devices']} in {r['processes']} processes, {r['rate_per_device']} event/s each for "
        f"{r['duration_s']:g} s ({r['events_per_s']} events/s), heartbeats every {r['heartbeat_s']} s",
        f"events delivered: {r['events_delivered']}/{r['events_expected']} (each id once), lost {r['events_lost']}, "
        f"duplicates {r['duplicates']}, left in outboxes {r['left_in_outboxes']}",
        f"latency publish->subscriber: p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms, "
        f"max {r['latency_ms']['max']} ms (all events)",
    ]
    if "latency_steady_ms" in r:
        lines.append(
            f"latency before the restart: p50 {r['latency_steady_ms']['p50']} ms, "
            f"p99 {r['latency_steady_ms']['p99']} ms"
        )
    lines.append(
        f"broker CPU: {r['broker_cpu_pct']} % of one core over the run"
        + (f" ({r['broker_cpu_steady_pct']} % before the restart)" if "broker_cpu_steady_pct" in r else "")
    )
    if "restart" in r:
        x = r["restart"]
        lines.append(
            f"broker restart: down {x['outage_s']} s; {x['events_published_during_outage']} events queued "
            f"in outboxes meanwhile; {x['devices_back_online']}/{r['devices']} devices back online "
            f"after {x['all_online_after_s']} s; backlog delivered {x['backlog_delivered_after_s']} s "
            f"after the broker was back"
        )
    lines.append(
        f"heartbeats received: {r['heartbeats_received']}; schedule lag max {r['max_schedule_lag_s']} s; "
        f"start-up {r['startup_s']} s; open files limit {r['open_files_limit']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
