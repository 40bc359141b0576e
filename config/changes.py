"""What a configuration reload changes: dotted keys with their old and new values, secrets masked."""

from __future__ import annotations

from typing import Any

from .loader import masked_dump
from .schema import Config


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"rules": {"fall_angle_deg": 45}} -> {"rules.fall_angle_deg": 45}"""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Changed keys (dotted) -> (old, new) as they may be logged: compared on the real values (a changed
    password counts), shown masked (secrets, and passwords inside URLs such as an RTSP camera.source)."""
    a, b = flatten(old.model_dump()), flatten(new.model_dump())
    shown_a, shown_b = flatten(masked_dump(old)), flatten(masked_dump(new))
    return {k: (shown_a.get(k), shown_b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
