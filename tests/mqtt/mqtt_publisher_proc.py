"""A stand-in daemon process for the MQTT tests: builds MqttPublisher from a config file and runs until killed.

    python mqtt_publisher_proc.py CONFIG.yaml

Reads commands on stdin, one per line: ``event [KIND]`` raises an event (prints ``queued <id>`` once it is in
the outbox), ``stats`` prints the stats as JSON, ``quit`` stops cleanly (as does SIGTERM). Prints ``ready``
once started. Logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import sys

from fallwatch.config.loader import load_config
from fallwatch.daemon.mqtt.publisher import MqttPublisher
from mqtt_testlib import make_event, status_figures  # beside this script


def main() -> int:
    logging.basicConfig(
        level=logging.DEBUG if "-v" in sys.argv else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = load_config(sys.argv[1]).mqtt
    pub = MqttPublisher(cfg, camera="test-cam", version="0.0-test", figures=status_figures())
    # SIGTERM only unwinds the main thread; stop() runs below, never inside the signal handler
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pub.start()
    print("ready", flush=True)
    n = 0
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "event":
                event = make_event(words[1] if len(words) > 1 else "fall", n)
                n += 1
                pub.publish_event(event)
                print("queued", event["id"], flush=True)
            elif words[0] == "stats":
                print(json.dumps({**pub.stats(), "listening": pub.listening}), flush=True)
            elif words[0] == "quit":
                break
    finally:
        pub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
