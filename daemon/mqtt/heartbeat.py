"""The heartbeat: ``<prefix>/heartbeat`` every ``mqtt.heartbeat_s`` (QoS 0, not retained), the first when the link
comes up, one at once when something a watcher must see changes (alerts paused or resumed, a reload).

The message is a view of one Snapshot (telemetry/builder.py), built fresh as it is sent: the daemon's figures and
MQTT's delivery figures come from the same build as /api/stats, /metrics and the page, so they cannot disagree.
The same thread wakes when an alerts pause ends, so the end is announced on time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from fallwatch.daemon.mqtt.commands.alerts_switch import AlertsSwitch
from fallwatch.daemon.mqtt.link.client import LOGGER
from fallwatch.daemon.mqtt.link.connection import Connection, device_id_of
from fallwatch.daemon.telemetry.jsonsafe import to_json
from fallwatch.daemon.telemetry.snapshot import Snapshot, heartbeat
from fallwatch.rules.events import utc_now_iso

log = logging.getLogger(LOGGER)


def message(snapshot: Snapshot, *, heartbeat_s: float, device: str) -> dict[str, Any]:
    """One heartbeat: the device's figures, every camera's and the delivery figures, all from ``snapshot``."""
    mqtt = snapshot.mqtt
    return {
        "ts": utc_now_iso(),
        "uptime_s": round(snapshot.uptime_s, 1),
        "heartbeat_s": heartbeat_s,  # so a watcher can tell a late heartbeat from a slow cadence
        "version": snapshot.version,
        "device": device,
        **heartbeat(snapshot),
        "events_sent": mqtt.events_sent,
        "events_queued": mqtt.events_queued,
        "events_dropped": mqtt.events_dropped,
        "events_suppressed": mqtt.events_suppressed,
        "alerts": mqtt.alerts,
        "alerts_resume_at": mqtt.alerts_resume_at,
    }


class Heartbeat:
    def __init__(
        self,
        connection: Connection,
        switch: AlertsSwitch,
        snapshot: Callable[[], Snapshot],
        on_tick: Callable[[], None],
        stop: threading.Event,
    ):
        self._link = connection
        self._switch = switch
        self._snapshot = snapshot  # a fresh one, built as the message is sent
        self._on_tick = on_tick  # ends an alerts pause that reached alerts.pause_max_s
        self._stop = stop
        self.wake = threading.Event()  # connect, reconfigure, alerts switched

    def loop(self) -> None:
        # The first heartbeat goes out when the connection is made (the link wakes us), not also at start.
        every = self._link.cfg.heartbeat_s
        next_at = time.monotonic() + every
        while not self._stop.is_set():
            timeout = max(0.0, next_at - time.monotonic())
            left: Optional[float] = self._switch.left_s()
            if left is not None and left < timeout:  # wake when a pause ends, to announce it
                timeout = left + 0.01
            if self.wake.wait(timeout):
                self.wake.clear()
                if self._stop.is_set():
                    return
                next_at = time.monotonic()  # (re)connected or reconfigured: one now, then the cadence
            self._on_tick()
            if time.monotonic() < next_at:
                continue  # woken for the pause's end only
            self._send()
            # a steady cadence (no drift by the time a heartbeat takes); after a stall or a wake-up, start afresh
            every = self._link.cfg.heartbeat_s
            now = time.monotonic()
            next_at = next_at + every if next_at + every > now else now + every

    def _send(self) -> None:
        client = self._link.client
        if client is None or not self._link.connected:
            return
        try:
            cfg = self._link.cfg
            payload = to_json(message(self._snapshot(), heartbeat_s=cfg.heartbeat_s, device=device_id_of(cfg)))
            client.publish(f"{self._link.prefix}/heartbeat", payload, qos=0, retain=False)
        except Exception:
            log.exception("MQTT heartbeat failed")
