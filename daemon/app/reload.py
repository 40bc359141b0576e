"""SIGHUP: the configuration file is read and checked off the pipeline thread, and applied on it between two frames.

Only some sections apply while running (LIVE_SECTIONS, and each running camera's own rules and zones under
``cameras:``); the others hold the cameras, the models or the socket and need a restart: a reload says so for each
changed key (a camera added or taken out, a camera's source or size) and keeps their running values.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from fallwatch.config.cameras import CameraSetup, camera_setups
from fallwatch.config.changes import config_changes
from fallwatch.config.loader import load_config
from fallwatch.config.schema import Config
from fallwatch.daemon.telemetry.builder import SnapshotBuilder

log = logging.getLogger(__name__)

LIVE_SECTIONS = ("rules", "zones", "mqtt", "alerts", "log")
LIVE_CAMERA_KEYS = ("rules", "zones")  # of a `cameras:` entry, for a camera that runs before and after

T = TypeVar("T")


class BackgroundRead(Generic[T]):
    """``request()`` (a signal handler may call it: it only sets a flag) has ``read`` run in a thread of its own, so a
    slow or hostile file cannot stall detection; the pipeline thread polls ``take()`` between frames."""

    def __init__(self, read: Callable[[], Optional[T]]):
        self._read = read
        self._requested = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._result: Optional[T] = None

    def request(self) -> None:
        self._requested.set()

    def take(self) -> Optional[T]:
        """What a finished read returned (once), else None; starts the read asked for, one at a time."""
        if self._requested.is_set() and self._thread is None:
            self._requested.clear()
            self._thread = threading.Thread(target=self._run, name="config-reload", daemon=True)
            self._thread.start()
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
            result, self._result = self._result, None
            return result
        return None

    def _run(self) -> None:
        self._result = self._read()


def camera_rules(cfg: Config) -> dict[str, Any]:
    """Each camera's rules, by camera name; ValueError for a combination the rules refuse."""
    from fallwatch.daemon.app.settings import rule_settings
    from fallwatch.rules import make_rules

    return {s.name: make_rules(rule_settings(cfg, s), source=s.name) for s in camera_setups(cfg)}


def read_config(path: Path, source_override: Optional[str]) -> Optional[tuple[Config, dict[str, Any]]]:
    """The new configuration and each camera's rules made from it, or None (logged) when the file is refused.
    ``source_override`` (--source) replaces ``camera.source`` (one camera only)."""
    log.info("SIGHUP: reloading %s", path)
    try:
        new = load_config(path)
        if source_override and new.cameras is None:
            new.camera.source = source_override
        return new, camera_rules(new)
    except Exception as exc:  # ConfigError, a value the rules refuse, or anything else: never the daemon's end
        for line in getattr(exc, "errors", None) or str(exc).splitlines() or [repr(exc)]:
            log.error("%s", line)
        log.error("configuration reload rejected; keeping the running configuration")
        return None


def is_live(key: str, old: Config, new: Config) -> bool:
    """Whether a changed key (dotted) applies while running."""
    parts = key.split(".")
    if parts[0] in LIVE_SECTIONS:
        return True
    return (
        parts[0] == "cameras"
        and len(parts) > 2
        and parts[2] in LIVE_CAMERA_KEYS
        and all(c is not None and parts[1] in c for c in (old.cameras, new.cameras))
    )


def log_changes(changes: dict[str, tuple[Any, Any]], old: Config, new: Config) -> None:
    for key, (before, after) in changes.items():
        if is_live(key, old, new):
            log.info("configuration reloaded: %s %s -> %s", key, before, after)
        else:
            log.warning(
                "configuration: %s %s -> %s needs a restart to apply (systemctl restart fallwatch); keeping %s",
                key,
                before,
                after,
                before,
            )


def running_config(old: Config, new: Config) -> Config:
    """The new live sections (and the running cameras' new rules and zones), the old rest: the next reload reports
    what was not applied again, and the status stays truthful."""
    kept = {s: getattr(old, s) for s in type(old).model_fields if s not in LIVE_SECTIONS}
    if old.cameras is not None and new.cameras is not None:
        kept["cameras"] = {
            name: entry.model_copy(update={k: getattr(new.cameras[name], k) for k in LIVE_CAMERA_KEYS})
            if name in new.cameras
            else entry
            for name, entry in old.cameras.items()
        }
    return new.model_copy(update=kept)


@dataclass(frozen=True)
class ReloadPlan:
    """A reload applied: the changed keys, the running configuration, and each running camera's setup after it."""

    changes: dict[str, tuple[Any, Any]]
    running: Config
    setups: dict[str, CameraSetup]


def apply_reload(
    old: Config,
    new: Config,
    rules: dict[str, Any],
    cameras: Mapping[str, Any],
    outputs: Any,
    figures: SnapshotBuilder,
) -> Optional[ReloadPlan]:
    """Apply what of ``new`` applies live to the running ``cameras`` (CameraWorker) and ``outputs`` (Outputs):
    each running camera's rules and zones, MQTT, alerts, reminders, notifications. ``rules``: those read with the
    file, by camera (a camera taken out of the file keeps running with its own). None when refused (logged)."""
    from fallwatch.daemon.app.settings import ignore_polygons, rule_settings
    from fallwatch.rules import make_rules

    changes = config_changes(old, new)
    if not changes:
        log.info("configuration reloaded: no changes")
        return ReloadPlan(changes, old, {})
    running = running_config(old, new)
    setups = {s.name: s for s in camera_setups(running)}
    changed = [n for n, w in cameras.items() if (setups[n].rules, setups[n].zones) != (w.setup.rules, w.setup.zones)]
    try:
        settings = {n: rule_settings(running, setups[n]) for n in changed}
        made = {n: rules[n] if n in rules else make_rules(settings[n], source=n) for n in changed}
    except ValueError as exc:
        return _rejected(str(exc))
    if any(k.startswith("mqtt.") for k in changes):
        try:  # first, as it is the one step that can still fail (unusable TLS files): all or nothing
            outputs.reload_mqtt(new, figures)
        except Exception as exc:
            return _rejected(f"mqtt: {exc}")
    log_changes(changes, old, new)
    for name in changed:
        worker, zones = cameras[name], ignore_polygons(running, setups[name])
        if zones != ignore_polygons(old, worker.setup):
            worker.set_ignore_zones(zones)
        worker.reconfigure(settings[name], made[name])
    for name, worker in cameras.items():
        worker.setup = setups[name]
    outputs.apply_reload(old, new)
    return ReloadPlan(changes, running, setups)


def _rejected(problem: str) -> Optional[ReloadPlan]:
    log.error("%s", problem)
    log.error("configuration reload rejected; keeping the running configuration")
    return None
