"""The one place the daemon's Snapshot is built: each part of the daemon that has figures registers a provider, and
``build`` pulls them all, in registration order, into one immutable Snapshot. Every output (the page, /api/stats,
/metrics, MQTT heartbeats, the systemd STATUS line) is a view of what this builds, so they cannot disagree.

A provider is a function of the monotonic time that returns the Snapshot fields it knows (``{"backend": ...}``,
``{"cameras": {...}}``). One that fails is logged once and left out of that build: figures never stop the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from fallwatch.daemon.telemetry.snapshot import CameraStats, Snapshot

log = logging.getLogger(__name__)

Provider = Callable[[float], Mapping[str, Any]]


class SnapshotBuilder:
    def __init__(self, version: str, cameras: list[str]) -> None:
        self.version = version
        self.started_wall, self.started_mono = time.time(), time.monotonic()
        self._providers: list[tuple[str, Provider]] = []
        self._failed: set[str] = set()
        self.last = Snapshot(
            version, cameras={name: CameraStats(name) for name in cameras}, started_at=self.started_wall
        )

    def provide(self, name: str, provider: Provider) -> None:
        """Register ``provider`` (named for its log line); a name given again replaces the earlier one."""
        self._providers = [(n, p) for n, p in self._providers if n != name] + [(name, provider)]

    def build(self, now: float) -> Snapshot:
        """A new Snapshot from every provider (kept as ``last``)."""
        fields: dict[str, Any] = {"uptime_s": round(now - self.started_mono, 3)}
        for name, provider in self._providers:
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
