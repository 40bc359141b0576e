"""One check's result and where the checks look."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class Check:
    status: str  # ok | warn | fail
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}" + (f" [fix: {self.fix}]" if self.fix else "")


@dataclass
class Environment:
    """Where the checks look; tests point these at fake trees."""

    sysfs: Path = Path("/sys")
    dev: Path = Path("/dev")
    proc: Path = Path("/proc")
    dpkg_query: Sequence[str] = ("dpkg-query",)
    os_release: Path = Path("/etc/os-release")
