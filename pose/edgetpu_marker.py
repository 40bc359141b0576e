"""The crash marker: a file in the state directory that exists exactly while this process uses the Edge TPU.

A delegate that segfaults mid-run kills the process before any ``except`` runs. The marker is written when the
TPU is taken into use and removed on a clean exit or a switch to the CPU; a marker left behind by a process that
is gone means the TPU took that process down. The next start then stays on the CPU, saying so, until the user
deletes the marker or the Edge TPU stack changes (an upgrade, which the marker records, makes it stale).
Nothing is done per frame.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

_GLOB = "edgetpu-in-use.*.json"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _alive(pid: int, boot_id: str) -> bool:
    """Is the marker's process still running? A pid from before a reboot is another process now."""
    if boot_id != _boot_id():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover(state_dir: Path, stack: str) -> Optional[tuple[Path, dict[str, Any]]]:
    """A marker left by a process that died while using the TPU with this same stack, if any. Markers written
    under another stack are stale (the stack was upgraded since) and are removed."""
    for path in sorted(Path(state_dir).glob(_GLOB)):
        try:
            info = json.loads(path.read_text())
            pid = int(info.get("pid", -1))
        except (OSError, ValueError, TypeError, AttributeError):
            info, pid = {}, -1
        if pid == os.getpid() or (pid > 0 and _alive(pid, str(info.get("boot_id", "")))):
            continue  # in use by a running process (a `fallwatch detect` beside the daemon)
        if info.get("stack") != stack:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only state directory: it is ignored all the same
            continue
        return path, info
    return None


def describe(path: Path, info: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("time", 0) or 0)))
    return (
        f"the Edge TPU took fallwatch down while running (pid {info.get('pid', '?')}, started {when}); "
        f"staying on the CPU until {path} is deleted"
    )


class Marker:
    """Written on creation; remove() (also run at interpreter exit) deletes it."""

    def __init__(self, state_dir: Path, stack: str):
        self.path = Path(state_dir) / f"edgetpu-in-use.{os.getpid()}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({"pid": os.getpid(), "boot_id": _boot_id(), "time": time.time(), "stack": stack})
        )
        atexit.register(self.remove)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        atexit.unregister(self.remove)
