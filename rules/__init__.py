"""fallwatch.rules: pure logic from timestamped keypoints to fall events (no model, no clock, no I/O)."""
from __future__ import annotations

from .base import STRATEGIES, PersonPose, RuleSettings, Rules
from .events import Event
from .fall import FallRules


def make_rules(settings: RuleSettings, source: str = "") -> Rules:
    """The rule strategy that ``settings.strategy`` names, for one video source."""
    if settings.strategy == "ambianic":
        from .ambianic import AmbianicRules
        return AmbianicRules(settings, source)
    if settings.strategy == "fallwatch":
        return FallRules(settings, source)
    raise ValueError(f"unknown rules.strategy {settings.strategy!r} (expected one of {', '.join(STRATEGIES)})")


__all__ = ["Event", "FallRules", "PersonPose", "RuleSettings", "Rules", "STRATEGIES", "make_rules"]
