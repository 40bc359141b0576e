"""fallwatch.rules: pure logic from timestamped keypoints to fall events (no model, no clock, no I/O)."""

from __future__ import annotations

from .base import STRATEGIES, PersonPose, Rules, RuleSettings
from .events import Event
from .fall import FallRules, make_rules

__all__ = ["Event", "FallRules", "PersonPose", "RuleSettings", "Rules", "STRATEGIES", "make_rules"]
