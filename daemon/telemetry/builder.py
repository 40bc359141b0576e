"""The one place the daemon's Snapshot is built: each part of the daemon that has figures registers a provider, and
``build`` pulls them all, in registration order, into one immutable Snapshot. Every output (the page, /api/stats,
/metrics, MQTT heartbeats, the systemd STATUS line) is a view of what this builds, so they cannot disagree.

A provider is a function of the monotonic time that returns the Snapshot fields it knows (``{"backend": ...}``,
``{"cameras": {...}}``). One that fails is logged once and left out of that build: figures never stop the loop.
A ``heavy`` provider (one that reads the disk) is pulled only by ``build(now, heavy=True)`` (the MQTT heartbeat's
cadence); its figures stay in the snapshot until it is pulled again. Any thread may build (one at a time).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from fallwatch.daemon.telemetry.snapshot import CameraStats, Snapshot

log = logging.getLogger(__name__)

Provider = Callable[[float], Mapping[str, Any]]


class SnapshotBuilder:
    def __init__(self, version: str, cameras: list[str]) -> None:
        self.version = version
        self.started_wall, self.started_mono = time.time(), time.monotonic()
        self._providers: list[tuple[str, Provider, bool]] = []  # (name, provider, heavy)
        self._lock = threading.Lock()
        self._failed: set[str] = set()
        self.last = Snapshot(
            version, cameras={name: CameraStats(name) for name in cameras}, started_at=self.started_wall
        )

    def provide(self, name: str, provider: Provider, *, heavy: bool = False) -> None:
        """Register ``provider`` (named for its log line); a name given again replaces the earlier one."""
        with self._lock:
            self._providers = [p for p in self._providers if p[0] != name] + [(name, provider, heavy)]

    def build(self, now: float, *, heavy: bool = False) -> Snapshot:
        """A new Snapshot from every provider, the heavy ones too when ``heavy`` (kept as ``last``)."""
        with self._lock:
            fields: dict[str, Any] = {"uptime_s": round(now - self.started_mono, 3)}
            for name, provider, is_heavy in self._providers:
                if is_heavy and not heavy:
                    continue
                try:
                    fields.update(provider(now))
                except Exception:
                    if name not in self._failed:
                        self._failed.add(name)
                        log.exception("figures from %s failed; shown without them", name)
            if not fields.get("cameras"):
                fields["cameras"] = self.last.cameras
            self.last = self.last.replace(**fields)
            return self.last
