"""How far a fall decision was from going the other way: each deciding signal against its threshold.

A fall needs every gate of the rule passed: the torso drop against what the spine's turn calls for, the descent
rate, the hips' own drop, and the share of frames that looked down while settling (and, for a landing squatting
or sitting upright, staying down confirm_s). Each gate's margin is value / threshold - 1: positive when passed,
negative when not, 0.2 meaning 20 % of the threshold to spare. An attempt's margin is its weakest gate's, so a
`fall` with margin 0.05 would have been missed with thresholds 5 % stricter (or signals 5 % weaker), and a
daily activity at -0.05 came within 5 % of an alarm. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Gate:
    """One deciding signal of an attempt and the threshold it is held against."""

    signal: str  # "drop", "descent_rate", "hip_drop", "settle", "confirm_s"
    value: float
    threshold: float

    @property
    def margin(self) -> float:
        return self.value / self.threshold - 1.0 if self.threshold > 0 else float("inf")


@dataclass(frozen=True)
class Attempt:
    """One approach to a fall by one person: its gates and how it ended ("fall" or why not)."""

    t: float
    track: int
    outcome: str  # "fall", or the gate that stopped it: "no candidate", "not down", "hips up", "got up"
    gates: tuple[Gate, ...] = field(default_factory=tuple)

    @property
    def weakest(self) -> Gate:
        return min(self.gates, key=lambda g: g.margin)

    @property
    def margin(self) -> float:
        return self.weakest.margin

    def to_dict(self) -> dict:
        return {
            "t": round(self.t, 3),
            "track": self.track,
            "outcome": self.outcome,
            "margin": round(self.margin, 3),
            "deciding": self.weakest.signal,
            "gates": {g.signal: [round(g.value, 3), round(g.threshold, 3)] for g in self.gates},
        }


class MarginLog:
    """Per rules instance: every `fall`'s attempt, and the nearest miss of those that raised nothing."""

    def __init__(self) -> None:
        self.falls: list[Attempt] = []
        self.nearest_miss: Optional[Attempt] = None

    def fell(self, attempt: Attempt) -> None:
        """A `fall`'s attempt; again for the same fall (track and time) when its evidence grew afterwards."""
        for i, a in enumerate(self.falls):
            if a.track == attempt.track and a.t == attempt.t:
                self.falls[i] = attempt
                return
        self.falls.append(attempt)

    def missed(self, attempt: Attempt) -> None:
        if self.nearest_miss is None or attempt.margin > self.nearest_miss.margin:
            self.nearest_miss = attempt

    def decision(self, fall_t: Optional[float] = None) -> Optional[Attempt]:
        """The attempt that decided a clip: the `fall` at ``fall_t`` (or the first one) when there was one,
        else the nearest miss (None when nothing came near enough to be measured)."""
        if self.falls:
            if fall_t is not None:
                for a in self.falls:
                    if abs(a.t - fall_t) < 1e-6:
                        return a
            return self.falls[0]
        return self.nearest_miss
