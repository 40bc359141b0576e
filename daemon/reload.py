"""SIGHUP: the configuration file is read and checked off the pipeline thread, and applied on it between two frames.

Only some sections apply while running (LIVE_SECTIONS); the others hold the camera, the models or the socket and
need a restart: a reload says so for each changed key and keeps their running values.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar

from fallwatch.config.loader import load_config
from fallwatch.config.schema import Config

log = logging.getLogger(__name__)

LIVE_SECTIONS = ("rules", "zones", "mqtt", "alerts", "log")

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


def read_config(path: Path, source_override: Optional[str], camera: str) -> Optional[tuple[Config, Any]]:
    """The new configuration and the rules made from it, or None (logged) when the file is refused."""
    from fallwatch.rules import make_rules

    from .settings import rule_settings

    log.info("SIGHUP: reloading %s", path)
    try:
        new = load_config(path)
        if source_override:
            new.camera.source = source_override
        return new, make_rules(rule_settings(new), source=camera)
    except Exception as exc:  # ConfigError, a value the rules refuse, or anything else: never the daemon's end
        for line in getattr(exc, "errors", None) or str(exc).splitlines() or [repr(exc)]:
            log.error("%s", line)
        log.error("configuration reload rejected; keeping the running configuration")
        return None


def log_changes(changes: dict[str, tuple[Any, Any]]) -> None:
    for key, (before, after) in changes.items():
        if key.split(".", 1)[0] in LIVE_SECTIONS:
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
    """The new live sections, the old rest: the next reload reports what was not applied again, and the status
    stays truthful."""
    return new.model_copy(update={s: getattr(old, s) for s in type(old).model_fields if s not in LIVE_SECTIONS})
