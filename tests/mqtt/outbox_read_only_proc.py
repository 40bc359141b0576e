"""Run inside a private mount namespace (unshare -m) on a tmpfs at STATE_DIR: queue two events, remount the tmpfs
read-only (the SD card failing), then start a publisher on it against the broker at PORT. Prints the ids queued."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid

from fallwatch.config.schema import MqttConfig
from fallwatch.daemon.mqtt.outbox import Outbox
from fallwatch.daemon.mqtt.publisher import MqttPublisher

state_dir, port = sys.argv[1], int(sys.argv[2])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
box = Outbox(f"{state_dir}/outbox.sqlite3", 100)
ids = [str(uuid.uuid4()) for _ in range(2)]
for event_id in ids:
    box.put(event_id, json.dumps({"event": "fall", "id": event_id}).encode())
box.close()
subprocess.run(["mount", "-o", "remount,ro", state_dir], check=True)
print(json.dumps(ids), flush=True)
cfg = MqttConfig(host="127.0.0.1", port=port, device_id="rodev", state_dir=state_dir, reconnect_max_s=1)
pub = MqttPublisher(cfg, camera="cam", version="0")
pub.start()
deadline = time.monotonic() + 15
while pub.stats()["events_sent"] < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
pub.stop()
sys.exit(0 if pub.stats()["events_sent"] >= 2 else 1)
