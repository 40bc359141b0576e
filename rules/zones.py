"""Zones: polygons in image coordinates normalised to 0-1 (x to the right, y down), as plain data.

``rest`` (bed, sofa): lying there is normal. ``ignore`` (TV, mirror, poster): people seen there are not people;
the pose engine drops them before tracking, so the rules normally never see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

ZONE_KINDS = ("rest", "ignore")


@dataclass(frozen=True)
class Zone:
    kind: str  # "rest" | "ignore"
    points: tuple[tuple[float, float], ...]  # >= 3 vertices, each within 0-1
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ZONE_KINDS:
            raise ValueError(f"zone {self.name!r}: kind must be one of {', '.join(ZONE_KINDS)}, not {self.kind!r}")
        if len(self.points) < 3:
            raise ValueError(f"zone {self.name!r}: needs at least 3 points")

    def contains(self, x: float, y: float) -> bool:
        """Whether the normalised point (x, y) lies inside the polygon (even-odd rule)."""
        return point_in_polygon(x, y, self.points)

    @classmethod
    def from_mapping(cls, value: Any) -> "Zone":
        """From a dict or an object with kind / points / name (e.g. the pydantic ZoneConfig)."""
        get = value.get if isinstance(value, dict) else lambda k, d=None: getattr(value, k, d)
        points = tuple((float(p[0]), float(p[1])) for p in get("points", ()))
        return cls(kind=str(get("kind")), points=points, name=str(get("name", "") or ""))


def point_in_polygon(x: float, y: float, points: Iterable[tuple[float, float]]) -> bool:
    pts = list(points)
    inside = False
    j = len(pts) - 1
    for i in range(len(pts)):
        xi, yi = pts[i]
        xj, yj = pts[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def in_zone(zones: Iterable[Zone], kind: str, x: float, y: float) -> bool:
    """Whether the normalised point lies in any zone of ``kind``."""
    return any(z.kind == kind and z.contains(x, y) for z in zones)
