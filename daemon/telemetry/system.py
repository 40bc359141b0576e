"""Figures of the machine the daemon runs on, read when a Snapshot is built (telemetry/snapshot.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

CPU_TEMP = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temp_c(path: Path = CPU_TEMP) -> Optional[float]:
    """The SoC temperature in °C where the system exposes it (Raspberry Pi does), else None."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None
