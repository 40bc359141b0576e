"""The load test (bench/mqtt_load.py, `make mqtt-load`) in miniature, so the benchmark cannot rot: three devices
for two seconds with a broker restart in the middle deliver every event. Figures are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "mqtt_load.py"


def test_mqtt_load_script_delivers_every_event_across_a_restart(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--devices",
            "3",
            "--duration",
            "2",
            "--outage",
            "1",
            "--drain",
            "30",
            "--state-dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["events_expected"] == 6 and report["events_delivered"] == 6 and report["events_lost"] == 0
    assert report["left_in_outboxes"] == 0 and report["unexpected_ids"] == 0
    assert report["restart"]["devices_back_online"] == 3
    assert report["broker_cpu_pct"] >= 0 and report["latency_ms"]["p50"] > 0
