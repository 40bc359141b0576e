"""`privacy: skeleton` in the real daemon on a real fall clip: the MQTT snapshot, the event record's snapshot and
every clip frame show the skeletons on the plain background only, never the camera's picture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml
from fallwatch.daemon.records.recorder import PLAIN_BACKGROUND

PREFIX = "fallwatch/priv"


def plain_share(bgr: np.ndarray) -> float:
    """Share of pixels at the privacy background's grey (JPEG noise allowed)."""
    return float(np.mean(np.all(np.abs(bgr.astype(int) - PLAIN_BACKGROUND) <= 6, axis=2)))


@pytest.mark.slow
def test_privacy_skeleton_images_over_mqtt_and_on_disk(mosquitto, subscriber, model_dir, data_dir, tmp_path):
    clip = data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"
    events_dir = tmp_path / "events"
    config = tmp_path / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"name": "bath", "realtime": True, "loop": True},
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": mosquitto.port,
                    "device_id": "priv",
                    "snapshots": True,
                    "state_dir": str(tmp_path / "state"),
                    "reconnect_max_s": 1,
                },
                "debug": {"enabled": False},
                "privacy": "skeleton",
                "events": {"dir": str(events_dir), "pre_s": 2, "post_s": 1},
            }
        )
    )
    sub = subscriber(mosquitto.port, [f"{PREFIX}/#"])
    log_file = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(clip)],
        env=dict(os.environ, FALLWATCH_MODEL_DIR=str(model_dir)),
        stdout=subprocess.DEVNULL,
        stderr=open(log_file, "wb"),
    )
    try:
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/event/snapshot"), 40), log_file.read_text()[-2000:]
        fall = next(e for e in sub.json_on(f"{PREFIX}/event") if e["event"] == "fall")
        meta = events_dir / fall["id"] / "event.json"
        deadline = time.monotonic() + 20
        while not meta.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert meta.is_file(), log_file.read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(10)
    record = meta.parent
    images = {
        "mqtt snapshot": cv2.imdecode(np.frombuffer(sub.on(f"{PREFIX}/event/snapshot")[0], np.uint8), cv2.IMREAD_COLOR),
        "record snapshot": cv2.imread(str(record / "snapshot.jpg")),
    }
    cap = cv2.VideoCapture(str(record / json.loads(meta.read_text())["clip"]))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        images[f"clip frame {n}"] = img
        n += 1
    assert n > 10
    for name, img in images.items():
        # the skeleton and box take a few percent of the picture; the camera's room would take most of it
        assert plain_share(img) > 0.75, f"{name}: only {plain_share(img):.2f} of it is the plain background"
    # and the person is drawn (a frame where pose found nobody is plain background only)
    drawn = [float(np.std(img)) > 2 for img in images.values()]
    assert sum(drawn) >= 0.8 * len(drawn)
