"""`fallwatch run` as a real process on real clips: signals, reload, failing sources, clean ends, clear errors."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
import yaml
from testnet import free_port
from waiting import wait_until

FALL_CLIP = "Subject 1/Fall/15.mp4"  # 640x480 30 fps, a side fall from a chair
ADL_CLIP = "Subject 2/ADL/23.mp4"


class Run:
    """One `fallwatch run` subprocess with stderr in a file and a NOTIFY_SOCKET to learn when it is ready."""

    def __init__(self, tmp_path: Path, config: dict, model_dir: Path, args: tuple = (), notify: bool = True):
        self.tmp = tmp_path
        self.config_file = tmp_path / "fallwatch.yaml"
        self.write_config(config)
        self.log_file = tmp_path / "stderr.log"
        self.out_file = tmp_path / "stdout.log"
        env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir), PYTHONUNBUFFERED="1")
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FALLWATCH_CONFIG"):
            env.pop(var, None)
        self.sock: Optional[socket.socket] = None
        if notify:
            path = str(tmp_path / "notify.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(path)
            self.sock.settimeout(0.2)
            env["NOTIFY_SOCKET"] = path
        self.messages: list[str] = []
        if self.sock is not None:
            # Read the socket all the time, as systemd does: a receive queue left full blocks the daemon's
            # sd_notify (systemd-python's has no send timeout), and a test that reads only now and then hangs it.
            threading.Thread(target=self._drain, daemon=True).start()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(self.config_file), *args],
            stdout=open(self.out_file, "wb"),
            stderr=open(self.log_file, "wb"),
            env=env,
        )

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_file)

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"log has not {count}x {pattern!r} (rc={self.proc.poll()}):\n{self.log[-3000:]}")

    def wait_notify(self, text: str, timeout: float = 60.0) -> str:
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in list(self.messages):
                if text in msg:
                    return msg
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from the daemon (rc={self.proc.poll()}):\n{self.log[-3000:]}")

    def signal_and_wait(self, sig: int, timeout: float = 10.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.sock is not None:
            self.sock.close()

    def _drain(self) -> None:
        assert self.sock is not None
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:  # closed
                return


@pytest.fixture
def run_daemon(tmp_path: Path, model_dir: Path):
    runs: list[Run] = []

    def start(config: dict, *args: str, notify: bool = True) -> Run:
        r = Run(tmp_path, config, model_dir, args, notify)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.close()


def base_config(source: str, tmp_path: Path, **camera) -> dict:
    return {
        "camera": {"source": source, **camera},
        "mqtt": {"enabled": False},
        "debug": {"enabled": True, "bind": f"127.0.0.1:{free_port()}"},
        "log": {"level": "INFO"},
    }


def get_json(bind: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{bind}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.solo
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_within_2s_with_exit_0(run_daemon, data_dir: Path, tmp_path: Path, sig: int) -> None:
    cfg = base_config(str(data_dir / "gmdcsa24-dev" / ADL_CLIP), tmp_path, realtime=True, loop=True)
    run = run_daemon(cfg)
    ready = run.wait_notify("READY=1")
    assert "fps on cpu" in ready or "fps on edgetpu" in ready
    run.wait_notify("STATUS=")
    # running steady, a viewer-less debug server up
    assert wait_until(lambda: get_json(cfg["debug"]["bind"], "/api/stats")[1].get("frames", 0) >= 10, 60, step=0.1)
    rc, took = run.signal_and_wait(sig)
    assert rc == 0, run.log[-2000:]
    assert took < 2.0, f"took {took:.2f}s to stop"
    print(f"{signal.Signals(sig).name}: stopped in {took:.2f}s")
    run.wait_notify("STOPPING=1", timeout=1)
    assert "stopped after" in run.log


@pytest.mark.solo
def test_sigterm_with_mqtt_connected_stops_within_2s(run_daemon, data_dir: Path, tmp_path: Path, mosquitto) -> None:
    cfg = base_config(str(data_dir / "gmdcsa24-dev" / ADL_CLIP), tmp_path, realtime=True, loop=True)
    cfg["mqtt"] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": mosquitto.port,
        "device_id": "daemontest",
        "state_dir": str(tmp_path / "state"),
        "heartbeat_s": 1,
    }
    run = run_daemon(cfg)
    run.wait_notify("READY=1")
    bind = cfg["debug"]["bind"]
    assert wait_until(lambda: get_json(bind, "/api/stats")[1].get("mqtt", {}).get("connected"), 30, step=0.1)
    assert get_json(bind, "/api/stats")[1]["mqtt"]["connected"] is True
    rc, took = run.signal_and_wait(signal.SIGTERM)
    assert rc == 0 and took < 2.0, (rc, took, run.log[-2000:])


@pytest.mark.solo
def test_sighup_applies_new_threshold_and_rejects_invalid_file(run_daemon, data_dir: Path, tmp_path: Path) -> None:
    cfg = base_config(str(data_dir / "gmdcsa24-dev" / ADL_CLIP), tmp_path, realtime=True, loop=True)
    run = run_daemon(cfg)
    run.wait_notify("READY=1")
    bind = cfg["debug"]["bind"]
    status, stats = get_json(bind, "/api/stats")
    assert status == 200
    before = float(stats["rules"]["fall_angle_deg"])  # the default
    after = before + 5
    opened_before = run.log.count("opened") + run.log.count("source: video file")

    cfg["rules"] = {"fall_angle_deg": after}
    cfg["pose"] = {"detect_every": 97}  # needs a restart: reported, not applied
    run.write_config(cfg)
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(rf"configuration reloaded: rules\.fall_angle_deg {before} -> {after}")
    run.wait_log(r"pose\.detect_every \d+ -> 97 needs a restart")
    assert get_json(bind, "/api/stats")[1]["rules"]["fall_angle_deg"] == after
    frames_before = get_json(bind, "/api/stats")[1]["frames"]

    # An invalid file: every error logged with its line, the running configuration kept.
    run.write_config("rules:\n  fall_angle_deg: 500\n  no_such_key: 1\n")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(r"reload rejected")
    assert re.search(r"fallwatch\.yaml:2: rules\.fall_angle_deg: must be between 10 and 90", run.log)
    assert re.search(r"fallwatch\.yaml:3: rules\.no_such_key: unknown key", run.log)
    frames = get_json(bind, "/api/stats")[1]["frames"]
    assert wait_until(lambda: get_json(bind, "/api/stats")[1]["frames"] > frames + 5, 30, step=0.1), "detection stopped"
    assert run.proc.poll() is None
    status, stats = get_json(bind, "/api/stats")
    assert stats["rules"]["fall_angle_deg"] == after
    assert stats["frames"] > frames_before, "the camera kept running through the reloads"
    assert run.log.count("opened") + run.log.count("source: video file") == opened_before, "camera was reopened"
    assert get_json(bind, "/healthz")[0] == 200

    # Side doors 1 and 2: a self-referencing alias (was: RecursionError, exit 1) and an alias bomb (was: gigabytes
    # on the detection thread, /healthz 503) are refused in one line each; detection goes on.
    run.write_config("a: &a [*a]\n")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(r"fallwatch\.yaml:1: YAML aliases \(\*a\) are not supported")
    bomb = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)
    ]
    run.write_config("\n".join(bomb) + "\n")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(r"fallwatch\.yaml:2: YAML aliases \(\*l0\) are not supported")
    run.wait_log(r"reload rejected", count=3)
    assert run.proc.poll() is None
    assert get_json(bind, "/healthz")[0] == 200

    # The file is read off the detection thread: a configuration that takes its time to read (here a FIFO
    # nobody writes yet) does not stall detection.
    fifo = tmp_path / "slow.fifo"
    os.mkfifo(fifo)
    os.replace(fifo, run.config_file)
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(r"SIGHUP: reloading", count=5)
    frames = get_json(bind, "/api/stats")[1]["frames"]
    assert wait_until(lambda: get_json(bind, "/api/stats")[1]["frames"] > frames + 10, 30, step=0.1), (
        "detection waited for the reload"
    )
    assert get_json(bind, "/healthz")[0] == 200
    cfg["rules"] = {"fall_angle_deg": after + 5}
    with open(run.config_file, "w") as writer:
        writer.write(yaml.safe_dump(cfg))
    run.wait_log(rf"configuration reloaded: rules\.fall_angle_deg {after} -> {after + 5}")

    rc, took = run.signal_and_wait(signal.SIGTERM)
    assert rc == 0 and took < 2.0


@pytest.mark.solo
def test_failing_source_is_retried_and_daemon_keeps_running(run_daemon, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = base_config("auto", tmp_path, reopen_max_s=1)
    run = run_daemon(cfg, "--source", f"rtsp://127.0.0.1:{port}/live")
    found = run.wait_log(r"retrying in ([\d.]+)s", count=3)
    assert [float(x) for x in found[:3]] == [0.5, 1.0, 1.0], "capped exponential backoff"
    assert run.proc.poll() is None
    status, stats = get_json(cfg["debug"]["bind"], "/api/stats")
    assert stats["camera"] == "reopening"
    assert stats["camera_error"] == f"cannot open rtsp://127.0.0.1:{port}/live", "why, not only what"
    assert get_json(cfg["debug"]["bind"], "/healthz")[0] == 503
    rc, took = run.signal_and_wait(signal.SIGTERM)
    assert rc == 0 and took < 2.0


def test_image_folder_runs_to_the_end_counting_corrupt_frames(run_daemon, tmp_path: Path, images_dir: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(["person.jpg", "fall_img_1.png", "squat.bmp"]):
        (folder / f"{i}a_{name}").symlink_to(images_dir / name)
    (folder / "1b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    run = run_daemon(base_config(str(folder), tmp_path, realtime=False))
    assert run.proc.wait(60) == 0, run.log[-2000:]
    assert re.search(r"stopped after 3 frames, \d+ events, 0 dropped, 1 corrupt frames", run.log), run.log[-2000:]
    assert "READY=1" in run.wait_notify("READY=1")


def test_fall_clip_logs_the_event(run_daemon, data_dir: Path, tmp_path: Path) -> None:
    run = run_daemon(
        base_config(str(data_dir / "gmdcsa24-dev" / FALL_CLIP), tmp_path, realtime=False, name="livingroom")
    )
    assert run.proc.wait(120) == 0, run.log[-2000:]
    lines = [line for line in run.log.splitlines() if "event fall: " in line]
    assert lines, run.log[-3000:]
    event = json.loads(lines[0].split("event fall: ", 1)[1])
    assert event["camera"] == "livingroom" and event["backend"] == "cpu"
    assert 1.5 < event["t"] < 6.5  # the dataset labels the fall at 1.8 - 6.0 s


def test_no_camera_is_one_clear_line(run_daemon, tmp_path: Path) -> None:
    from fallwatch.daemon.capture.sources import picamera2_available, v4l2_cameras

    if v4l2_cameras() or picamera2_available():
        pytest.skip("this machine has a camera")
    run = run_daemon(base_config("auto", tmp_path), notify=False)
    rc = run.proc.wait(30)
    lines = run.log.strip().splitlines()
    assert rc != 0 and lines == [
        "fallwatch: no camera found (no Pi camera, no /dev/video*); set camera.source or use --source FILE"
    ], run.log


def test_missing_model_names_the_file_and_the_fetch_command(run_daemon, data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    run = run_daemon(
        base_config(str(data_dir / "gmdcsa24-dev" / FALL_CLIP), tmp_path), "--model-dir", str(empty), notify=False
    )
    rc = run.proc.wait(30)
    lines = run.log.strip().splitlines()
    assert rc != 0 and len(lines) == 1, run.log
    assert lines[0].startswith("fallwatch: model file ") and str(empty) in lines[0]
    assert "fallwatch models fetch " in lines[0]


def test_invalid_config_exits_2_with_every_error(run_daemon, tmp_path: Path) -> None:
    run = run_daemon({"camera": {"rotate": 45}, "rules": {"fall_angle_deg": 5}}, notify=False)
    assert run.proc.wait(30) == 2
    lines = run.log.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("fallwatch.yaml:") for line in lines), run.log


def test_fall_clip_reaches_the_broker_with_snapshot_and_state(
    run_daemon, data_dir: Path, tmp_path: Path, mosquitto
) -> None:
    """The whole path on a real clip: capture -> pose -> rules -> outbox -> a real mosquitto."""
    import paho.mqtt.client as mqtt

    received: list[tuple[str, bytes, bool]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="daemon-test-sub")
    client.on_message = lambda c, u, msg: received.append((msg.topic, msg.payload, msg.retain))
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("fallwatch/daemontest/#", qos=1)
    client.loop_start()
    try:
        cfg = base_config(str(data_dir / "gmdcsa24-dev" / FALL_CLIP), tmp_path, realtime=False, name="hall")
        cfg["mqtt"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": mosquitto.port,
            "device_id": "daemontest",
            "state_dir": str(tmp_path / "state"),
            "snapshots": True,
            "homeassistant": {"enabled": False},
        }
        run = run_daemon(cfg)
        assert run.proc.wait(120) == 0, run.log[-2000:]
        wait_until(lambda: any(t.endswith("/event/snapshot") for t, _, _ in received), 10)
    finally:
        client.loop_stop()
        client.disconnect()
    events = [json.loads(p) for t, p, _ in received if t == "fallwatch/daemontest/event"]
    falls = [e for e in events if e["event"] == "fall"]
    assert falls, f"{[t for t, _, _ in received]}\n{run.log[-2000:]}"
    assert falls[0]["camera"] == "hall" and falls[0]["device"] == "daemontest" and falls[0]["backend"] == "cpu"
    snapshots = [p for t, p, _ in received if t == "fallwatch/daemontest/event/snapshot"]
    assert snapshots and snapshots[0][:2] == b"\xff\xd8" and snapshots[0][-2:] == b"\xff\xd9"
    states = [json.loads(p) for t, p, _ in received if t == "fallwatch/daemontest/state"]
    assert any(s["state"] == "fall" for s in states), states
    availability = [p for t, p, _ in received if t == "fallwatch/daemontest/availability"]
    assert availability[-1] == b"offline", "a clean stop says offline"


@pytest.mark.solo
def test_sighup_turns_mqtt_on_and_rejects_unusable_tls_whole(
    run_daemon, data_dir: Path, tmp_path: Path, mosquitto
) -> None:
    cfg = base_config(str(data_dir / "gmdcsa24-dev" / ADL_CLIP), tmp_path, realtime=True, loop=True)
    run = run_daemon(cfg)
    run.wait_notify("READY=1")
    bind = cfg["debug"]["bind"]
    assert get_json(bind, "/api/stats")[1]["mqtt"]["connected"] is False

    cfg["mqtt"] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": mosquitto.port,
        "device_id": "reloadtest",
        "state_dir": str(tmp_path / "state"),
        "homeassistant": {"enabled": False},
    }
    run.write_config(cfg)
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(r"mqtt enabled by the new configuration")
    assert wait_until(lambda: get_json(bind, "/api/stats")[1]["mqtt"]["connected"], 30, step=0.1)
    assert get_json(bind, "/api/stats")[1]["mqtt"]["connected"] is True
    angle = get_json(bind, "/api/stats")[1]["rules"]["fall_angle_deg"]

    # TLS with a CA file that is no certificate: the loader cannot know, the MQTT client can. Nothing applies.
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate\n")
    cfg["mqtt"]["tls"] = {"enabled": True, "ca_certs": str(bad_ca)}
    cfg["rules"] = {"fall_angle_deg": angle - 5}
    run.write_config(cfg)
    run.proc.send_signal(signal.SIGHUP)
    run.wait_log(r"reload rejected")
    assert "mqtt.tls" in run.log
    frames = get_json(bind, "/api/stats")[1]["frames"]
    assert wait_until(lambda: get_json(bind, "/api/stats")[1]["frames"] > frames + 5, 30, step=0.1), "detection stopped"
    stats = get_json(bind, "/api/stats")[1]
    assert stats["rules"]["fall_angle_deg"] == angle and stats["mqtt"]["connected"] is True
    rc, took = run.signal_and_wait(signal.SIGTERM)
    assert rc == 0 and took < 2.0


@pytest.mark.parametrize("clip", [FALL_CLIP, "Subject 2/Fall/12.mp4"])
def test_daemon_and_detect_agree_to_the_last_event(
    run_daemon, data_dir: Path, tmp_path: Path, model_dir: Path, clip: str
) -> None:
    """`fallwatch run` on a file (realtime: false) and `fallwatch detect` see the same frames at the same times."""
    path = data_dir / "gmdcsa24-dev" / clip
    env = dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir))
    detect = subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "detect", "--json", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert detect.returncode == 0, detect.stderr[-2000:]
    run = run_daemon(base_config(str(path), tmp_path, realtime=False))
    assert run.proc.wait(120) == 0, run.log[-2000:]

    def key(e: dict) -> tuple:
        return e["event"], e["t"], e["frame"], e["track"], e["spine_angle_deg"]

    expected = [key(json.loads(line)) for line in detect.stdout.splitlines() if line.strip()]
    got = [
        key(json.loads(line.split(": ", 1)[1].split(": ", 1)[1]))
        for line in run.log.splitlines()
        if re.search(r"fallwatch\.daemon\.app\.outputs: event \w+: ", line)
    ]
    assert expected, "the clip is a fall"
    assert got == expected


@pytest.mark.parametrize("secret", ["", "\n"])
def test_unusable_debug_password_file_leaves_detection_running(
    run_daemon, tmp_path: Path, images_dir: Path, secret: str
) -> None:
    # An empty password file made DebugServer.start raise ValueError, which the daemon did not expect: it died
    # with a traceback. The debug page is optional; fall detection must carry on without it.
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(["person.jpg", "squat.bmp"]):
        (folder / f"{i}_{name}").symlink_to(images_dir / name)
    pw = tmp_path / "debug_pw"
    pw.write_text(secret)
    cfg = base_config(str(folder), tmp_path, realtime=False)
    cfg["debug"].update(username="alice", password_file=str(pw))
    run = run_daemon(cfg)
    assert run.proc.wait(60) == 0, run.log[-2000:]
    assert "Traceback" not in run.log, run.log[-3000:]
    lines = [line for line in run.log.splitlines() if "debug server" in line]
    assert len(lines) == 1 and "ERROR" in lines[0] and "no password" in lines[0], run.log[-2000:]
    assert re.search(r"stopped after 2 frames", run.log), run.log[-2000:]
    # side door 8: the start-up line listed "debug" among the outputs all the same
    assert re.search(r"running: .* -> rules \(fallwatch\) -> log\n", run.log), run.log


def test_signal_handler_only_sets_flags(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The handler runs between two bytecodes of the main thread. Starting a thread there (threading's limbo lock)
    # or logging could deadlock against the very lock the interrupted code holds; the deadline thread exists
    # before any signal and does both.
    from fallwatch.daemon.app.stop_signals import StopSignals

    stop, reload = threading.Event(), threading.Event()
    signals = StopSignals(stop=stop.set, reload=reload.set, starting=lambda: False, exit_code=lambda: 0)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    started: list[str] = []
    real_start = threading.Thread.start
    try:
        signals.install()
        monkeypatch.setattr("threading.Thread.start", lambda self: (started.append(self.name), real_start(self)))
        with caplog.at_level(logging.INFO, logger="fallwatch.daemon.app.stop_signals"):
            signal.raise_signal(signal.SIGTERM)
            assert stop.is_set()
            assert started == [], started
            wait_until(lambda: "SIGTERM received; stopping" in caplog.text, 10)  # the deadline thread logs it
            said = [r for r in caplog.records if "SIGTERM received" in r.getMessage()]
            assert len(said) == 1 and said[0].threadName == "stop-deadline", [r.threadName for r in said]
            signal.raise_signal(signal.SIGHUP)
            assert reload.is_set()
    finally:
        signals.done()  # disarm the deadline (it would end this very process)
        for s, h in saved.items():
            signal.signal(s, h)


STUCK_IN_C = """
import ctypes, signal, sys, time
from fallwatch.daemon.app.stop_signals import StopSignals
StopSignals(stop=lambda: None, reload=lambda: None, starting=lambda: False, exit_code=lambda: 0).install()
# The main thread goes into C code that releases the GIL and does not return on a signal (libusb and camera
# drivers retry on EINTR): with SIGTERM blocked in this thread the kernel hands it to another thread.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
ctypes.CDLL(None).sleep(8)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
time.sleep(30)
"""


def in_nanosleep(pid: int) -> bool:
    """The process's main thread is blocked in nanosleep(2) (its kernel wait channel, else its system call number
    on x86-64; where /proc tells neither, after a moment)."""
    try:
        if "nanosleep" in Path(f"/proc/{pid}/wchan").read_text():
            return True
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in ("35", "230")
    except (OSError, IndexError):
        time.sleep(0.3)
        return True


@pytest.mark.solo
def test_sigterm_while_the_main_thread_is_stuck_in_c_code_still_exits_in_time(tmp_path: Path) -> None:
    # Python runs a signal handler only when the main thread gets back to bytecode; the stop deadline used to be
    # armed by that handler, so a C call of 8 s meant ~10 s to exit. The wake-up fd arms it at once.
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_IN_C], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert wait_until(lambda: in_nanosleep(proc.pid), 10), "the main thread did not get into the C call"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert rc == 0 and took < 2.5, (rc, took)


def test_room_state_keeps_an_unseen_fall_when_someone_else_stands_in_view(
    data_dir: Path, images_dir: Path, model_dir: Path
) -> None:
    # The room state follows the rules' open incidents: a fallen person who drops out of view (behind the bed)
    # keeps the alarm, however long, instead of it lapsing; someone else standing in view, away from where they
    # lay, is not their recovery (only they, seen getting up there, are: tests/rules/test_rules_floor.py).
    import cv2
    from fallwatch.config.schema import Config
    from fallwatch.daemon.app.service import Daemon
    from fallwatch.daemon.app.settings import make_engine
    from fallwatch.daemon.capture.reader import Capture
    from fallwatch.daemon.capture.sources import EndOfStream, Source

    class FallEmptyThenStanding(Source):
        """The fall clip at its own time stamps, 4 s of an empty room, then 5 s of a person standing, 10 fps."""

        name = "fall-empty-standing"
        is_file = True
        fps = 30.0

        def open(self) -> None:
            self.cap = cv2.VideoCapture(str(data_dir / "gmdcsa24-dev" / FALL_CLIP))
            self.empty = cv2.resize(cv2.imread(str(images_dir / "background.jpg")), (640, 480))
            self.standing = cv2.resize(cv2.imread(str(images_dir / "fall_img_1.png")), (640, 480))
            self.i, self.t, self.empty_left, self.standing_left = 0, 0.0, 40, 50

        def read(self) -> Optional[tuple]:
            ok, bgr = self.cap.read() if self.cap is not None else (False, None)
            if ok:
                self.t = self.i / self.fps
                self.i += 1
                return bgr, self.t
            if self.cap is not None:
                self.cap.release()
                self.cap = None
            self.t += 0.1
            if self.empty_left:
                self.empty_left -= 1
                if self.empty_left == 0:  # the last empty frame: what does the daemon say now?
                    states.append(daemon.state)
                return self.empty.copy(), self.t
            if self.standing_left:
                self.standing_left -= 1
                return self.standing.copy(), self.t
            raise EndOfStream()

    states: list[str] = []
    cfg = Config.model_validate(
        {
            "camera": {"realtime": False},
            "mqtt": {"enabled": False},
            "debug": {"enabled": False},
            "rules": {"down_alert_s": 2, "track_forget_s": 1, "recover_s": 2},
        }
    )
    daemon = Daemon(
        cfg, engine=make_engine(cfg, str(model_dir)), capture=Capture(FallEmptyThenStanding(), realtime=False)
    )
    assert daemon.run() == 0
    kinds = [e["event"] for e in daemon.outputs.hub.recent_events()]
    assert kinds[:2] == ["fall", "person_down"], kinds
    assert states == ["person_down"], "the alarm lapsed while the fallen person was out of view"
    assert kinds == ["fall", "person_down"], kinds
    assert daemon.state == "person_down" and daemon.published_state["state"] == "person_down"


def test_rules_reload_keeps_a_person_on_the_floor_on_record(data_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    # SIGHUP with new thresholds of the same strategy applies them in place: the fallen person's incident
    # (and so the alarm and the coming person_down) survives the reload.
    import cv2
    from fallwatch.daemon.app.service import Daemon
    from fallwatch.daemon.app.settings import make_engine
    from fallwatch.daemon.capture.reader import Capture
    from fallwatch.daemon.capture.sources import EndOfStream, Source

    config_file = tmp_path / "fallwatch.yaml"
    base = "mqtt:\n  enabled: false\ndebug:\n  enabled: false\ncamera:\n  realtime: false\n"
    config_file.write_text(base + "rules:\n  down_alert_s: 3\n")

    class FallThenLying(Source):
        """The fall clip, then its last frame (the person on the floor) for 4 s at 10 fps; reload on the way."""

        name = "fall-then-lying"
        is_file = True
        fps = 30.0

        def open(self) -> None:
            self.cap = cv2.VideoCapture(str(data_dir / "gmdcsa24-dev" / FALL_CLIP))
            self.i, self.t, self.last, self.lying_left = 0, 0.0, None, 40

        def read(self) -> Optional[tuple]:
            ok, bgr = self.cap.read() if self.cap is not None else (False, None)
            if ok:
                self.t, self.last = self.i / self.fps, bgr
                self.i += 1
                return bgr, self.t
            if self.cap is not None:
                self.cap.release()
                self.cap = None
                config_file.write_text(base + "rules:\n  down_alert_s: 3\n  fall_angle_deg: 65\n")
                daemon.request_reload()
            if not self.lying_left:
                raise EndOfStream()
            self.lying_left -= 1
            self.t += 0.1
            return self.last.copy(), self.t

    from fallwatch.config.loader import load_config

    cfg = load_config(config_file)
    daemon = Daemon(
        cfg,
        config_path=config_file,
        engine=make_engine(cfg, str(model_dir)),
        capture=Capture(FallThenLying(), realtime=False),
    )
    assert daemon.run() == 0
    assert daemon.camera.pipeline.rules.s.fall_angle_deg == 65  # the reload was applied ...
    kinds = [e["event"] for e in daemon.outputs.hub.recent_events()]
    assert kinds == ["fall", "person_down"], kinds  # ... and the incident went on through it
    assert daemon.state == "person_down"


def test_reload_log_shows_changes_without_their_secrets() -> None:
    from fallwatch.config.changes import config_changes
    from fallwatch.config.loader import parse_config

    old = parse_config("camera:\n  source: rtsp://cam:old-secret@192.0.2.9/s\nmqtt:\n  username: u\n  password: p1\n")
    new = parse_config("camera:\n  source: rtsp://cam:new-secret@192.0.2.9/s\nmqtt:\n  username: u\n  password: p2\n")
    changes = config_changes(old, new)
    assert set(changes) == {"camera.source", "mqtt.password"}  # a changed secret is still a change
    assert "secret" not in repr(changes) and "p1" not in repr(changes) and "p2" not in repr(changes)
    assert changes["camera.source"] == ("rtsp://cam:***@192.0.2.9/s", "rtsp://cam:***@192.0.2.9/s")


def test_a_video_with_no_decodable_frame_exits_1_saying_so(run_daemon, data_dir: Path, tmp_path: Path) -> None:
    # Side door 7: a file whose every frame is damaged ended as a clean finish: exit 0 after 0 frames.
    data = bytearray((data_dir / "gmdcsa24-dev" / FALL_CLIP).read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = bytes(end - start)
    video = tmp_path / "damaged.mp4"
    video.write_bytes(bytes(data))
    run = run_daemon(base_config(str(video), tmp_path, realtime=False), notify=False)
    assert run.proc.wait(120) == 1, run.log[-2000:]
    assert re.search(rf"source failed: camera.source {re.escape(str(video))}: no frame could be decoded", run.log)
