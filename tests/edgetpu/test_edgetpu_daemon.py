"""Whole commands with the fake libedgetpu.so.1: `fallwatch detect` survives a delegate that segfaults, and a
TPU that crashes the daemon mid-run does not crash-loop it (the next start runs on the CPU and says why, in the
log, /api/stats and the MQTT heartbeat)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from fallwatch.pose.edgetpu_stack import FIX
from paho.mqtt.enums import CallbackAPIVersion
from testnet import free_port

FALL_CLIP = "Subject 1/Fall/13.mp4"
CRASH_REASON = "the Edge TPU took fallwatch down while running"


def _env(fake_dir: Path, mode: str, state: Path, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        LD_LIBRARY_PATH=str(fake_dir),
        FAKE_EDGETPU=mode,
        STATE_DIRECTORY=str(state),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FALLWATCH_CONFIG"):
        env.pop(var, None)
    return env


def test_detect_survives_a_segfaulting_delegate(
    fake_edgetpu_dir: Path, tpu_models: Path, data_dir: Path, tmp_path: Path
) -> None:
    clip = data_dir / "gmdcsa24-dev" / FALL_CLIP
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fallwatch.daemon.cli.main",
            "detect",
            str(clip),
            "--json",
            "--model-dir",
            str(tpu_models),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(fake_edgetpu_dir, "segv", tmp_path / "state"),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(e["event"] == "fall" for e in events), proc.stdout
    reasons = [line for line in proc.stderr.splitlines() if "the Edge TPU delegate crashed (SIGSEGV)" in line]
    assert len(reasons) == 1 and FIX in reasons[0], proc.stderr


class Run:
    """`fallwatch run` on a looping clip, debug server on a free port."""

    def __init__(self, tmp_path: Path, models: Path, clip: Path, env: dict[str, str], mqtt_port: int = 0):
        self.port = free_port()
        cfg = {
            "camera": {"name": "tpu", "source": str(clip), "loop": True, "realtime": True},
            "mqtt": {
                "enabled": bool(mqtt_port),
                "host": "127.0.0.1",
                "port": mqtt_port or 1883,
                "device_id": "tputest",
                "heartbeat_s": 1,
            },
            "debug": {"enabled": True, "bind": f"127.0.0.1:{self.port}"},
            "log": {"level": "INFO"},
        }
        config = tmp_path / f"fallwatch-{self.port}.yaml"
        config.write_text(yaml.safe_dump(cfg))
        self.log_path = tmp_path / f"daemon-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fallwatch.daemon.cli.main",
                "run",
                "--config",
                str(config),
                "--model-dir",
                str(models),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),
            env=env,
            stdin=subprocess.DEVNULL,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stats(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/api/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def wait_stats(self, test, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                stats = self.stats()
                if test(stats):
                    return stats
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"stats never matched (rc={self.proc.poll()}):\n{self.log[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def test_a_tpu_crash_mid_run_does_not_crash_loop(
    fake_edgetpu_dir: Path, tpu_models: Path, data_dir: Path, tmp_path: Path, mosquitto
) -> None:
    clip = data_dir / "gmdcsa24-dev" / FALL_CLIP
    state, crash = tmp_path / "state", tmp_path / "crash-now"
    env = _env(fake_edgetpu_dir, "ok", state, FAKE_EDGETPU_CRASH_WHEN=str(crash))
    first = Run(tmp_path, tpu_models, clip, env)
    try:
        first.wait_stats(lambda s: s.get("backend") == "edgetpu" and s.get("frames", 0) > 5)
        assert len(list(state.glob("edgetpu-in-use.*.json"))) == 1  # the TPU is in use
        crash.touch()  # the fake delegate's thread now segfaults the daemon, as a TPU crash mid-run would
        assert first.proc.wait(60) == -signal.SIGSEGV
    finally:
        first.stop()
    assert len(list(state.glob("edgetpu-in-use.*.json"))) == 1  # left behind by the crash
    # systemd restarts it (the crash file still there: touching the TPU again would crash it again)
    heartbeats: queue.Queue = queue.Queue()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2)
    listener.on_message = lambda c, u, m: heartbeats.put(json.loads(m.payload))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe("fallwatch/tputest/heartbeat")
    listener.loop_start()
    second = Run(tmp_path, tpu_models, clip, env, mqtt_port=mosquitto.port)
    try:
        stats = second.wait_stats(lambda s: s.get("backend") == "cpu" and s.get("frames", 0) > 5)
        assert CRASH_REASON in stats["backend_reason"] and FIX in stats["backend_reason"]
        beat = heartbeats.get(timeout=30)
        assert beat["backend"] == "cpu" and beat["backend_reason"] == stats["backend_reason"]
        assert second.proc.poll() is None  # running, on the CPU
        warnings = [line for line in second.log.splitlines() if CRASH_REASON in line and " WARNING " in line]
        assert len(warnings) == 1, second.log[-3000:]
        assert second.stop() == 0
    finally:
        second.stop()
        listener.loop_stop()
        listener.disconnect()
    assert len(list(state.glob("edgetpu-in-use.*.json"))) == 1  # kept until the user deletes it
