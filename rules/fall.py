"""The fallwatch rule: a per-person window state machine over the spine's angle and the torso's height.

upright --(torso midpoint drops fast and far against a robust "before" pose; how far depends on how much the
           spine turned: a full topple needs min_drop, no turn at all drop_without_turn)--> falling
falling --(body stays down for settle_s and the hips came down min_hip_drop)--> down, emits `fall`
           (else back to upright, nothing emitted)
down --(still down down_alert_s after the fall)--> emits `person_down` once
down --(upright for recover_s)--> upright, emits `recovered`

Decisions use frame timestamps only, never the wall clock, so a replay gives the same events every time.
"""
from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .base import STRATEGIES, PersonPose, RuleSettings, Rules, finite_box, keypoint_box
from .events import Event
from .geometry import LEG_FRACTION, BodyGeometry, measure

log = logging.getLogger(__name__)

HISTORY_S = 4.0  # seconds of samples kept per person at least: window_max_s plus the reference span, with room
MIN_REFERENCE_SAMPLES = 3  # a median of fewer poses is not robust against one garbage pose
ADOPT_DISTANCE = 1.5  # a new track this many body heights from a lost fallen person is taken to be them
MAX_UNSEEN_FALLS = 8  # unresolved falls of people out of view kept on record; beyond, the oldest is dropped
STANDING_LEGS = 0.8  # legs under the body at this share of the standing height's leg length: standing


@dataclass
class _Ref:
    """The robust "before" pose: medians over reference_s ending at some sample."""

    centre_y: float
    hip_y: float
    angle: float
    height: float


@dataclass
class _Sample:
    t: float
    frame: int
    g: BodyGeometry
    box: list[float]
    ref: Optional[_Ref]
    speed: float = 0.0  # downward torso speed (pixels/s) over the last window_min_s; negative when rising


@dataclass
class _Fall:
    """What triggered the current incident (kept for the settle check, recovery and the event)."""

    t: float
    ref: _Ref
    drop: float
    turn: float
    rate: float
    angle: float
    need: float
    score: float
    hip_drop: float = 0.0
    down: int = 0
    measured: int = 0
    event_t: Optional[float] = None
    person_down_sent: bool = False
    upright_since: Optional[float] = None


@dataclass
class _Track:
    track: int
    samples: deque = field(default_factory=deque)
    last_seen: float = float("-inf")
    last_box: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    state: str = "upright"
    fall: Optional[_Fall] = None
    last_fall_t: float = float("-inf")
    upright_since: Optional[float] = None  # spine near vertical continuously since then (any track state)


def _centre(g: BodyGeometry) -> float:
    """Image y of the torso's midpoint. Falls are measured on it rather than on the hips alone: a fall to
    the side drops the hips only ~0.2-0.4 body heights in the image but the shoulders twice that (measured on
    the URFD falls), while a fall along the line of sight drops both."""
    return (g.hip_y + g.shoulder_y) / 2.0


def _centre_x(g: BodyGeometry) -> float:
    return (g.hip_x + g.shoulder_x) / 2.0


class FallRules(Rules):
    def __init__(self, settings: RuleSettings, source: str = "") -> None:
        self.s = settings
        self.source = source
        self._tracks: dict[int, _Track] = {}

    @property
    def _history_s(self) -> float:
        # A longer configured window needs a longer history, or its far end silently never has a sample.
        return max(HISTORY_S, self.s.window_max_s + self.s.reference_s + 0.5)

    # -- public --------------------------------------------------------------------------------------------
    def person_states(self) -> dict[int, str]:
        return {k: tr.state for k, tr in self._tracks.items()}

    def update(self, t: float, frame: int, people: list[PersonPose], size: tuple[int, int]) -> list[Event]:
        events: list[Event] = []
        stale = [k for k, tr in self._tracks.items() if tr.last_seen - t > self._history_s]
        if stale:
            # Time went back further than any history reaches (a restarted source): start afresh rather than
            # ignore these people until the clock catches up with their old time stamps.
            log.info("time went back to %.2f s; forgetting tracks %s", t, stale)
            for k in stale:
                del self._tracks[k]
        present = {p.track for p in people}
        seen: set[int] = set()
        for person in people:
            if person.track in seen:
                log.debug("frame %d: track %s appears twice; keeping the first", frame, person.track)
                continue
            seen.add(person.track)
            tr = self._tracks.get(person.track)
            if tr is None:
                tr = self._new_track(person, present)
            events.extend(self._observe(tr, t, frame, person, size))
        # People not seen in this frame still age: a fallen person the model lost is still down.
        for key, tr in list(self._tracks.items()):
            if key not in seen:
                events.extend(self._tick(tr, t, frame))
                if self._forgettable(tr, t):
                    del self._tracks[key]
        events.extend(self._conclude_unseen_falls(t, frame, seen))
        return events

    def _conclude_unseen_falls(self, t: float, frame: int, seen: set[int]) -> list[Event]:
        """A fallen person out of view cannot be seen getting up, and their alarm must not simply lapse. When
        they have been gone track_forget_s while someone in view has stood upright for recover_s, that is taken
        to be them, back on their feet (fallwatch watches the room of someone living alone; a visitor standing
        there can look after them): their incident ends with `recovered`."""
        unseen = sorted((tr.last_seen, key) for key, tr in self._tracks.items() if key not in seen and tr.state == "down")
        for _, key in unseen[:-MAX_UNSEEN_FALLS]:  # bounded memory, however many come, fall and go
            log.warning("%s: dropping the unresolved fall of track %s, out of view since t=%.1f (more than %d)",
                        self.source or "-", key, self._tracks[key].last_seen, MAX_UNSEEN_FALLS)
            del self._tracks[key]
        standing = any(self._tracks[k].upright_since is not None and t - self._tracks[k].upright_since
                       >= self.s.recover_s and self._tracks[k].state == "upright" for k in seen)
        if not standing:
            return []
        events = []
        for key, tr in list(self._tracks.items()):
            if key not in seen and tr.state == "down" and t - tr.last_seen > self.s.track_forget_s:
                f = tr.fall
                tr.state, tr.fall = "upright", None
                events.append(self._event("recovered", tr, t, frame, confidence=self._last_score(tr), fall=f))
                del self._tracks[key]
        return events

    # -- tracks --------------------------------------------------------------------------------------------
    def _new_track(self, person: PersonPose, present: set[int]) -> _Track:
        """A new id may be a fallen person the pose engine lost and found again: a new track that looks down,
        near where a fallen person not in this frame was last seen, takes over their incident (so no second
        `fall`, and `person_down` / `recovered` stay with it). Someone upright walking in never does."""
        g = measure(person.keypoints, self.s.min_keypoint_score)
        if g is not None:
            for key, old in list(self._tracks.items()):
                if key in present or old.state == "upright" or old.fall is None or not old.samples:
                    continue
                if self._is_upright(g, old.fall.ref):
                    continue
                last = old.samples[-1].g
                scale = old.fall.ref.height
                if np.hypot(_centre(last) - _centre(g), _centre_x(last) - _centre_x(g)) <= ADOPT_DISTANCE * scale:
                    log.info("track %s continues fallen track %s", person.track, key)
                    del self._tracks[key]
                    old.track = person.track
                    self._tracks[person.track] = old
                    return old
        tr = _Track(track=person.track)
        self._tracks[person.track] = tr
        return tr

    def _forgettable(self, tr: _Track, t: float) -> bool:
        # A fallen person stays on record, out of view or not, until their incident ends with `recovered`.
        return tr.state != "down" and t - tr.last_seen > self.s.track_forget_s

    # -- per frame -----------------------------------------------------------------------------------------
    def _observe(self, tr: _Track, t: float, frame: int, person: PersonPose, size: tuple[int, int]) -> list[Event]:
        kps = np.asarray(person.keypoints, dtype=float)
        box = finite_box(person.box) if person.box is not None else None
        if box is not None:
            tr.last_box = box
        elif kps.shape == (17, 3):
            tr.last_box = keypoint_box(kps, self.s.min_keypoint_score)
        if t <= tr.last_seen:  # repeated or late frame: nothing new to learn
            return []
        tr.last_seen = t
        g = measure(kps, self.s.min_keypoint_score)
        if g is None:
            return self._tick(tr, t, frame)
        if g.spine_angle_deg <= self.s.upright_angle_deg:
            tr.upright_since = t if tr.upright_since is None else tr.upright_since
        else:
            tr.upright_since = None
        sample = _Sample(t, frame, g, tr.last_box, None)
        while tr.samples and tr.samples[0].t < t - self._history_s:
            tr.samples.popleft()
        sample.speed = self._speed(tr, sample)
        tr.samples.append(sample)
        sample.ref = self._reference(tr, t, size)

        if tr.state == "upright":
            if t - tr.last_fall_t >= self.s.cooldown_s:
                self._start_falling(tr, self._candidate(tr, sample), sample)
        elif tr.state == "falling":
            f = tr.fall
            f.measured += 1
            f.down += self._is_down(g, f.ref)
            f.hip_drop = max(f.hip_drop, (g.hip_y - f.ref.hip_y) / f.ref.height)
            if f.down < f.measured:
                # The pending drop has a frame that did not look down (one bad pose can start a candidate):
                # a fresh, fully consistent candidate from this frame replaces it.
                self._start_falling(tr, self._candidate(tr, sample), sample)
        elif tr.state == "down":
            f = tr.fall
            if self._is_upright(g, f.ref):
                if f.upright_since is None:
                    f.upright_since = t
            else:
                f.upright_since = None
        return self._tick(tr, t, frame)

    def _tick(self, tr: _Track, t: float, frame: int) -> list[Event]:
        """Time-driven transitions; runs whether or not the person was measured in this frame."""
        f = tr.fall
        if tr.state == "falling" and t - f.t >= self.s.settle_s:
            stayed_down = f.measured and f.down / f.measured >= self.s.settle_fraction and f.down >= 2
            if stayed_down and f.hip_drop >= self.s.min_hip_drop:
                tr.state = "down"
                f.event_t = t
                tr.last_fall_t = t
                return [self._event("fall", tr, t, frame, confidence=self._confidence(f))]
            # Still down but the hips have not come down yet (a side fall lands hips last): wait, within the
            # window; a bend keeps its hips up and runs out of time here.
            if not stayed_down or t - f.t > self.s.window_max_s:
                log.debug("track %s: drop at t=%.2f did not end down (%d/%d, hips %.2f)", tr.track, f.t, f.down,
                          f.measured, f.hip_drop)
                tr.state, tr.fall = "upright", None
        elif tr.state == "down":
            if f.upright_since is not None and t - f.upright_since >= self.s.recover_s:
                tr.state, tr.fall = "upright", None
                return [self._event("recovered", tr, t, frame, confidence=self._last_score(tr), fall=f)]
            if not f.person_down_sent and t - f.event_t >= self.s.down_alert_s:
                f.person_down_sent = True
                return [self._event("person_down", tr, t, frame, confidence=self._confidence(f))]
        return []

    # -- the rule ------------------------------------------------------------------------------------------
    def _reference(self, tr: _Track, t: float, size: tuple[int, int]) -> Optional[_Ref]:
        span = [s.g for s in tr.samples if s.t >= t - self.s.reference_s]
        if len(span) < MIN_REFERENCE_SAMPLES:
            return None
        ref = _Ref(centre_y=statistics.median(_centre(g) for g in span),
                   hip_y=statistics.median(g.hip_y for g in span),
                   angle=statistics.median(g.spine_angle_deg for g in span),
                   height=statistics.median(g.height_px for g in span))
        frame_h = float(size[1]) if size and size[1] else 0.0
        if ref.height <= 0 or (frame_h and ref.height < self.s.min_body_frac * frame_h):
            return None
        return ref

    def _speed(self, tr: _Track, now: _Sample) -> float:
        """Downward torso speed measured against the newest sample at least window_min_s older (a shorter base
        would turn keypoint jitter into speed); 0 across a gap of missing frames too long to say."""
        for old in reversed(tr.samples):
            dt = now.t - old.t
            if dt >= self.s.window_min_s:
                return (_centre(now.g) - _centre(old.g)) / dt if dt <= 2 * self.s.window_min_s + 0.2 else 0.0
        return 0.0

    def _needed_drop(self, turn: float) -> float:
        """Torso-midpoint drop (body heights) a fall needs, given how far the spine turned from vertical:
        min_drop with a full topple, drop_without_turn with none, linear in between."""
        k = min(max(turn / self.s.fall_angle_deg, 0.0), 1.0)
        return self.s.drop_without_turn - (self.s.drop_without_turn - self.s.min_drop) * k

    def _candidate(self, tr: _Track, now: _Sample) -> Optional[_Fall]:
        """The strongest fall candidate ending at ``now``: against each robust "before" in the window, the
        torso drop must reach what the spine's turn calls for, and the descent must have been fast somewhere."""
        best: Optional[_Fall] = None
        peak_speed = 0.0  # fastest torso descent between the candidate "before" and now (pixels/s)
        for s in reversed(tr.samples):
            dt = now.t - s.t
            if dt > self.s.window_max_s:
                break
            peak_speed = max(peak_speed, s.speed)
            if dt < self.s.window_min_s or s.ref is None:
                continue
            drop = (_centre(now.g) - s.ref.centre_y) / s.ref.height
            turn = now.g.spine_angle_deg - s.ref.angle  # signed: standing up / lying back turns it back
            rate = peak_speed / s.ref.height
            need = self._needed_drop(turn)
            if drop < need or rate < self.s.min_descent_rate:
                continue
            score = drop / need + max(turn, 0.0) / 90.0
            if best is None or score > best.score:
                best = _Fall(t=now.t, ref=s.ref, drop=drop, turn=turn, rate=rate, angle=now.g.spine_angle_deg,
                             need=need, score=score, hip_drop=(now.g.hip_y - s.ref.hip_y) / s.ref.height)
        return best

    def _start_falling(self, tr: _Track, cand: Optional[_Fall], now: _Sample) -> None:
        if cand is None:
            return
        cand.measured, cand.down = 1, int(self._is_down(now.g, cand.ref))
        tr.state, tr.fall = "falling", cand
        log.debug("track %s: drop %.2f turn %.0f rate %.2f at t=%.2f", tr.track, cand.drop, cand.turn, cand.rate,
                  now.t)

    def _is_down(self, g: BodyGeometry, ref: _Ref) -> bool:
        """Near horizontal, or the torso still as low (for its turn) as a fall needs, against the same "before"."""
        drop = (_centre(g) - ref.centre_y) / ref.height
        return g.spine_angle_deg >= self.s.down_angle_deg or drop >= self._needed_drop(g.spine_angle_deg - ref.angle)

    def _is_upright(self, g: BodyGeometry, ref: _Ref) -> bool:
        """Spine near vertical, and either the torso back above fall level (standing, or sitting on a chair)
        or the legs upright under the body at nearly full length (standing up somewhere nearer the camera,
        which puts the whole body lower in the image). Sitting up on the floor is neither."""
        if g.spine_angle_deg > self.s.upright_angle_deg:
            return False
        if (_centre(g) - ref.centre_y) / ref.height < self.s.min_drop:
            return True
        return g.legs_px is not None and g.legs_px / LEG_FRACTION >= STANDING_LEGS * ref.height

    # -- events --------------------------------------------------------------------------------------------
    def _confidence(self, f: _Fall) -> float:
        """0.5 at the thresholds, towards 1 with more evidence, scaled by how consistently the body looked down."""
        strength = (0.6 * min(1.0, 0.5 * f.drop / f.need)
                    + 0.4 * min(1.0, 0.5 * f.rate / max(self.s.min_descent_rate, 1e-6)))
        consistency = f.down / f.measured if f.measured else 0.0
        return max(0.0, min(1.0, strength * (0.5 + 0.5 * consistency)))

    @staticmethod
    def _last_score(tr: _Track) -> float:
        return float(tr.samples[-1].g.score) if tr.samples else 0.0

    def _event(self, kind: str, tr: _Track, t: float, frame: int, confidence: float,
               fall: Optional[_Fall] = None) -> Event:
        f = fall or tr.fall
        last = tr.samples[-1].g if tr.samples else None
        angle = last.spine_angle_deg if last is not None else f.angle
        if kind == "fall":
            angle = f.angle
        log.info("%s: %s track %s at t=%.2f (drop %.2f, turn %.0f, rate %.2f)", self.source or "-", kind,
                 tr.track, t, f.drop, f.turn, f.rate)
        return Event(event=kind, source=self.source, t=t, frame=frame, track=tr.track, confidence=confidence,
                     spine_angle_deg=angle, angle_change_deg=angle - f.ref.angle,
                     descent_rate=f.rate if kind != "recovered" else 0.0, box=list(tr.last_box))


def make_rules(settings: RuleSettings, source: str = "") -> Rules:
    """The rule strategy ``settings.strategy`` names, for one video source."""
    if settings.strategy == "fallwatch":
        return FallRules(settings, source)
    if settings.strategy == "ambianic":
        from .ambianic import AmbianicRules
        return AmbianicRules(settings, source)
    raise ValueError(f"unknown rules.strategy {settings.strategy!r} (expected one of {', '.join(STRATEGIES)})")
