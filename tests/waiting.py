"""The one way tests wait: on a condition, never for a fixed time that a busy machine may not honour."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (returns True) or ``timeout`` seconds pass (returns its last value,
    as a bool). Use a generous timeout: it only costs time when the test is about to fail anyway."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
