"""The fallwatch rule: a per-person window state machine over the spine's angle and the torso's height.

upright --(torso midpoint drops fast and far against a robust "before" pose; how far depends on how much the
           spine turned: a full topple needs min_drop, no turn at all drop_without_turn)--> falling
falling --(body seen down for settle_s, or seen down and then lost from view, and the hips came down
           min_hip_drop; a landing squatting or sitting upright with the legs folded must stay down confirm_s
           too)--> down, emits `fall`
           (else back to upright, nothing emitted)
upright --(on the floor down_alert_s, no fall seen: hips down at the level where the person's own feet stood
           when last seen standing)--> down, emits `person_down` with after_fall false
down --(still down down_alert_s after the fall)--> emits `person_down` once, after_fall true
down --(THIS person upright for recover_s, measured frame after frame)--> upright, emits `recovered`

Lying in a "rest" zone (bed, sofa) is normal: no `person_down` there, and a drop that began inside one is no fall.

Decisions use frame timestamps only, never the wall clock, so a replay gives the same events every time.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .base import STRATEGIES, PersonPose, Rules, RuleSettings, finite_box, keypoint_box
from .events import Event
from .geometry import LEG_FRACTION, BodyGeometry, measure
from .margins import Attempt, Gate, MarginLog
from .zones import in_zone

log = logging.getLogger(__name__)

HISTORY_S = 4.0  # seconds of samples kept per person at least: window_max_s plus the reference span, with room
MIN_REFERENCE_SAMPLES = 3  # a median of fewer poses is not robust against one garbage pose
ADOPT_DISTANCE = 1.5  # a new track this many body heights from a lost fallen person is taken to be them
RISE_DISTANCE = 0.75  # getting up keeps the torso within this many body heights (sideways) of where it lay
MAX_UNSEEN_FALLS = 8  # unresolved falls of people out of view kept on record; beyond, the oldest is dropped
STANDING_LEGS = 0.8  # legs under the body at this share of the standing height's leg length: standing
UPRIGHT_TORSO = 0.75  # torso at least this share of its standing image length: really upright, not lying along
# the camera's line of sight (which also shows a vertical spine, but a short one)
LYING_TORSO = 0.5  # torso under this share of its standing image length: tilted over 60 deg towards or away from
# the camera (a squat leaning forward stays above it)
FOLDED_FEET = 1.0  # ankles within this many torso lengths of the hips: legs folded under the body
NEARER_SCALE = 1.25  # a torso this much longer than when standing: the person came toward the camera
UPRIGHT_GAP_S = 1.0  # recovery needs upright poses no further apart than this (a dropout does not count as upright)
MAX_TORSO_SPEED = 5.0  # body heights/s (~8.5 m/s): no fall or run indoors moves the torso faster; a pose whose
MIN_JUMP = 0.5  # torso jumped faster than that, and further than this many body heights, is not the person's
JUMP_GAP_S = 0.5  # poses further apart in time than this are not compared (the person may really have got there)
LOST_LYING_S = 1.5  # a fall's one lying pose followed by no pose at all for this long: lying still, out of sight


@dataclass
class _Ref:
    """The robust "before" pose: medians over reference_s ending at some sample."""

    centre_y: float
    hip_y: float
    angle: float
    height: float
    hip_x: float = 0.0
    torso: float = 0.0


@dataclass
class _Stand:
    """Where the person last stood: the floor under them (image y of the ankles) and their standing pose (its
    height from the legs, which are foreshortened by the camera's tilt just as a height above the floor is)."""

    foot_y: float
    ref: _Ref


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
    # how long the body was seen down: from its first down frame to the frame after its last one (a pose stands
    # until the next frame), through frames where the person was found but their torso not measured
    down_from: Optional[float] = None
    down_to: Optional[float] = None
    down_open: bool = False  # the newest pose looked down and nothing has contradicted it since
    event_t: Optional[float] = None
    person_down_sent: bool = False
    upright_since: Optional[float] = None
    upright_last: float = float("-inf")
    folded: Optional[bool] = None  # landed squatting or sitting upright, legs folded: must stay down confirm_s
    max_angle: float = 0.0  # the spine's largest angle from vertical since the drop began
    up_since: Optional[float] = None  # frames no longer looking down since then
    after_fall: bool = True  # False: the incident began as a long lie on the floor with no fall seen
    # the strongest (drop, needed drop, descent rate) against any "before" while this attempt lasted (margins)
    closest: tuple = (0.0, 1.0, 0.0)


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
    first_seen: Optional[float] = None
    first_xy: Optional[tuple] = None  # torso midpoint when first measured
    stand: Optional[_Stand] = None  # the last standing pose with the feet in view
    floor_since: Optional[float] = None  # on the floor continuously (with hysteresis) since then, no fall seen
    off_floor_since: Optional[float] = None
    size: tuple = (0, 0)
    last_pose: Optional[tuple] = None  # (t, torso midpoint x, y) of the newest pose measured, used or not


def _centre(g: BodyGeometry) -> float:
    """Image y of the torso's midpoint. Falls are measured on it rather than on the hips alone: a fall to
    the side drops the hips only ~0.2-0.4 body heights in the image but the shoulders twice that (measured on
    the URFD falls), while a fall along the line of sight drops both."""
    return (g.hip_y + g.shoulder_y) / 2.0


def _centre_x(g: BodyGeometry) -> float:
    return (g.hip_x + g.shoulder_x) / 2.0


def _on_record(tr: "_Track") -> bool:
    """Down after a fall, or on the floor with no fall seen (yet): kept on record while out of view."""
    return (tr.state == "down" and tr.fall is not None) or (tr.floor_since is not None and tr.stand is not None)


def _floor_ref(tr: "_Track") -> _Ref:
    """The standing "before" pose that the person on the floor (a track on record) is measured against."""
    if tr.state == "down" and tr.fall is not None:
        return tr.fall.ref
    if tr.stand is None:
        raise RuntimeError(f"track {tr.track} is on the floor with no standing pose to measure it against")
    return tr.stand.ref


def _incident(tr: "_Track") -> _Fall:
    """The fall of a track that is falling or down (every such track has one)."""
    if tr.fall is None:
        raise RuntimeError(f"track {tr.track} is {tr.state} with no fall on record")
    return tr.fall


class FallRules(Rules):
    def __init__(self, settings: RuleSettings, source: str = "", margins: bool = False) -> None:
        self.s = settings
        self.source = source
        self._tracks: dict[int, _Track] = {}
        # how far each decision was from its thresholds: kept for fallwatch eval only (the daemon does not pay
        # for it: a list growing with every fall, and a candidate search per frame after each fall)
        self.margins: Optional[MarginLog] = MarginLog() if margins else None

    @property
    def _history_s(self) -> float:
        # A longer configured window needs a longer history, or its far end silently never has a sample.
        return max(HISTORY_S, self.s.window_max_s + self.s.reference_s + 0.5)

    # -- public --------------------------------------------------------------------------------------------
    def person_states(self) -> dict[int, str]:
        return {k: tr.state for k, tr in self._tracks.items()}

    def history_s(self, track: int) -> float:
        """Seconds of poses held for ``track`` (0 when none): how far back a fall's "before" can reach."""
        tr = self._tracks.get(track)
        return tr.samples[-1].t - tr.samples[0].t if tr is not None and tr.samples else 0.0

    def on_floor(self) -> dict[int, bool]:
        """Per track: down after a fall, or on the floor with no fall seen (what person_down counts)."""
        return {k: tr.state == "down" or tr.floor_since is not None for k, tr in self._tracks.items()}

    def measures(self, track: int, t: float) -> Optional[dict[str, Optional[float]]]:
        """The rules' own figures for ``track`` measured at ``t`` (None when it was not measured then), for plots:
        spine angle, torso drop in body heights against the highest "before" pose of the window (the one a
        fall is judged against) and downward torso speed in body heights/s."""
        tr = self._tracks.get(track)
        if tr is None or not tr.samples or tr.samples[-1].t != t:
            return None
        now = tr.samples[-1]
        befores = [
            s.ref for s in tr.samples if s.ref is not None and self.s.window_min_s <= t - s.t <= self.s.window_max_s
        ]
        before = min(befores, key=lambda r: r.centre_y) if befores else None
        height = before.height if before is not None else (now.ref.height if now.ref is not None else 0.0)
        return {
            "spine_angle_deg": now.g.spine_angle_deg,
            "drop": (_centre(now.g) - before.centre_y) / before.height if before is not None else None,
            "descent_rate": now.speed / height if height > 0 else None,
        }

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
        """A fallen person out of view cannot be seen getting up, and their alarm must not simply lapse. It ends
        only when they are seen upright again: a track that first appeared, after they were lost, where they
        lay (within ADOPT_DISTANCE body heights) and has stood upright for recover_s is taken to be them, back
        on their feet under a new id. Anyone else standing in the room, however near, is not their recovery."""
        unseen = sorted((tr.last_seen, key) for key, tr in self._tracks.items() if key not in seen and _on_record(tr))
        for _, key in unseen[:-MAX_UNSEEN_FALLS]:  # bounded memory, however many come, fall and go
            log.warning(
                "%s: dropping the unresolved fall of track %s, out of view since t=%.1f (more than %d)",
                self.source or "-",
                key,
                self._tracks[key].last_seen,
                MAX_UNSEEN_FALLS,
            )
            del self._tracks[key]
        events = []
        for key, tr in list(self._tracks.items()):
            if key in seen or not _on_record(tr) or not tr.samples:
                continue
            up = [self._tracks[k] for k in seen if self._is_them_standing(self._tracks[k], tr, t)]
            if up:
                log.info("%s: track %s stood up where track %s lay", self.source or "-", up[0].track, key)
                if tr.state == "down":
                    f = tr.fall
                    tr.state, tr.fall = "upright", None
                    events.append(self._event("recovered", tr, t, frame, confidence=self._last_score(tr), fall=f))
                del self._tracks[key]
        return events

    def _is_them_standing(self, other: _Track, fallen: _Track, t: float) -> bool:
        """Whether ``other`` is the fallen person back on their feet: first seen after they were lost, right
        where they lay (sideways within RISE_DISTANCE), upright for recover_s, legs under them."""
        if other.state != "upright" or other.upright_since is None or t - other.upright_since < self.s.recover_s:
            return False
        if other.first_seen is None or other.first_xy is None or other.first_seen <= fallen.last_seen:
            return False  # seen at the same time as the fallen person: somebody else
        if not other.samples or other.samples[-1].g.legs_px is None:
            return False  # standing on their legs, seen: not a partial pose that happens to be upright
        last = fallen.samples[-1].g
        scale = _floor_ref(fallen).height
        return bool(
            abs(other.first_xy[0] - _centre_x(last)) <= RISE_DISTANCE * scale
            and abs(other.first_xy[1] - _centre(last)) <= ADOPT_DISTANCE * scale
        )

    # -- tracks --------------------------------------------------------------------------------------------
    def _new_track(self, person: PersonPose, present: set[int]) -> _Track:
        """A new id may be a person on the floor the pose engine lost and found again: a new track that looks
        down, near where someone on the floor not in this frame was last seen, takes over their incident or
        their time on the floor (so no second `fall`, and `person_down` / `recovered` stay with it). Someone
        upright walking in never does."""
        g = measure(person.keypoints, self.s.min_keypoint_score)
        if g is not None:
            for key, old in list(self._tracks.items()):
                if key in present or not _on_record(old) or not old.samples:
                    continue
                ref = _floor_ref(old)
                if self._is_upright(g, ref):
                    continue
                last = old.samples[-1].g
                scale = ref.height
                if np.hypot(_centre(last) - _centre(g), _centre_x(last) - _centre_x(g)) <= ADOPT_DISTANCE * scale:
                    log.info("track %s continues fallen track %s", person.track, key)
                    del self._tracks[key]
                    old.track = person.track
                    self._tracks[person.track] = old
                    return old
        tr = _Track(track=person.track)
        if g is not None:
            tr.first_xy = (_centre_x(g), _centre(g))
        self._tracks[person.track] = tr
        return tr

    def _forgettable(self, tr: _Track, t: float) -> bool:
        # A person on the floor stays on record, out of view or not (the detector often misses people lying
        # down), until they are seen upright again; a fallen one until their incident ends with `recovered`.
        return not _on_record(tr) and t - tr.last_seen > self.s.track_forget_s

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
        tr.size = size
        if tr.first_seen is None:
            tr.first_seen = t
        g = measure(kps, self.s.min_keypoint_score)
        if g is None or self._jumped(tr, g, t):
            return self._tick(tr, t, frame)
        if tr.first_xy is None:
            tr.first_xy = (_centre_x(g), _centre(g))
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
        self._learn_stand(tr, sample)
        self._follow_floor(tr, sample)

        if tr.state == "upright":
            if t - tr.last_fall_t >= self.s.cooldown_s:
                self._start_falling(tr, self._candidate(tr, sample), sample)
        elif tr.state == "falling":
            f = _incident(tr)
            f.measured += 1
            down = self._is_down(g, f)
            f.down += down
            if down:
                f.down_from = t if f.down_from is None else f.down_from
                f.down_to, f.down_open = t, True
            f.up_since = None if down else (t if f.up_since is None else f.up_since)
            f.hip_drop = max(f.hip_drop, (g.hip_y - f.ref.hip_y) / f.ref.height)
            f.max_angle = max(f.max_angle, g.spine_angle_deg)
            if f.folded is None and t - f.t >= self.s.settle_s:  # the landing posture decides, once
                f.folded = self._folded(g, f.ref)
            if f.max_angle >= self.s.down_angle_deg:
                f.folded = False  # toppled over: whatever it was, it was not squatting
            if f.folded and f.up_since is not None and t - f.up_since >= self.s.settle_s:
                if self.margins is not None:
                    self.margins.missed(self._attempt(tr, f, f.up_since, "got up"))
                tr.state, tr.fall = "upright", None  # up again from a squat or a seat on the floor: no fall
            else:
                cand = self._candidate(tr, sample)
                if f.down < f.measured:
                    # The pending drop has a frame that did not look down (one bad pose can start a candidate):
                    # a fresh, fully consistent candidate from this frame replaces it.
                    self._start_falling(tr, cand, sample)
                if cand is not None and tr.fall is not None:
                    tr.fall.closest = self._stronger(tr.fall.closest, cand.closest)
        elif tr.state == "down":
            f = _incident(tr)
            if self.margins is not None and f.after_fall and f.event_t is not None and t - f.t <= self.s.window_max_s:
                self._follow_margin(tr, f, sample)
            if self._is_upright(g, f.ref):
                if f.upright_since is None or t - f.upright_last > UPRIGHT_GAP_S:
                    f.upright_since = t
                f.upright_last = t
                if t - f.upright_since >= self.s.recover_s:
                    tr.state, tr.fall = "upright", None
                    tr.floor_since = tr.off_floor_since = None
                    return [self._event("recovered", tr, t, frame, confidence=self._last_score(tr), fall=f)]
            else:
                f.upright_since = None
        return self._tick(tr, t, frame)

    def _jumped(self, tr: _Track, g: BodyGeometry, t: float) -> bool:
        """Whether this pose's torso is implausibly far from the pose just before it (measured within JUMP_GAP_S,
        used or not): more than MIN_JUMP body heights away and faster than MAX_TORSO_SPEED. In the dark the
        estimator, having lost a person lying on a dark floor, puts a pose on some furniture for a frame or two;
        that is not the person. A body that really is somewhere else now is taken from its second pose there."""
        last, tr.last_pose = tr.last_pose, (t, _centre_x(g), _centre(g))
        if last is None or t - last[0] > JUMP_GAP_S:
            return False
        scale = next((s.ref.height for s in reversed(tr.samples) if s.ref is not None), 0.0)
        if scale <= 0:
            return False
        jump = math.hypot(_centre_x(g) - last[1], _centre(g) - last[2]) / scale
        if jump > max(MIN_JUMP, MAX_TORSO_SPEED * (t - last[0])):
            log.debug(
                "track %s: pose at t=%.2f jumped %.2f body heights in %.2f s: ignored", tr.track, t, jump, t - last[0]
            )
            return True
        return False

    def _lost_lying(self, f: _Fall) -> bool:
        """A fast, far drop that ended lying (spine near horizontal, or turned as far along the camera's line of
        sight: a torso under LYING_TORSO of its length) and no pose since for LOST_LYING_S: what a dark floor
        does to a dark-clothed body lying still (the estimator scores it too low to keep); anyone all right
        moves about and is found again, and poses that come in between are judged as usual."""
        return f.measured == f.down == 1 and max(f.max_angle, f.turn) >= self.s.down_angle_deg

    def _seen_down_long(self, tr: _Track, f: _Fall, t: float) -> bool:
        """Whether the body was seen down for settle_s, or seen down and then not at all for LOST_LYING_S (lying
        still out of the estimator's sight). At night a person is often found in only a few frames: two down
        poses a tenth of a second apart and then a gap are someone bending down and up again as often as someone
        lying; the frames after the gap tell which."""
        if f.down_from is None or f.down_to is None:
            return False
        lost = f.up_since is None and t - tr.samples[-1].t >= LOST_LYING_S  # the newest pose looked down
        return f.down_to - f.down_from >= self.s.settle_s or lost

    def _learn_stand(self, tr: _Track, now: _Sample) -> None:
        """Remember where the person last stood with their feet in view: the floor under them, and their
        standing size (median over reference_s of standing poses only)."""
        if now.g.legs_px is None or now.g.spine_angle_deg > self.s.upright_angle_deg:
            return
        span = [s.g for s in tr.samples if s.t >= now.t - self.s.reference_s]
        if len(span) < MIN_REFERENCE_SAMPLES or any(
            g.legs_px is None or g.spine_angle_deg > self.s.upright_angle_deg for g in span
        ):
            return
        ref = _Ref(
            centre_y=statistics.median(_centre(g) for g in span),
            hip_y=statistics.median(g.hip_y for g in span),
            angle=statistics.median(g.spine_angle_deg for g in span),
            height=statistics.median(g.legs_px / LEG_FRACTION for g in span),
            hip_x=statistics.median(g.hip_x for g in span),
            torso=statistics.median(g.torso_px for g in span),
        )
        frame_h = float(tr.size[1]) if tr.size and tr.size[1] else 0.0
        if ref.height <= 0 or (frame_h and ref.height < self.s.min_body_frac * frame_h):
            return
        tr.stand = _Stand(foot_y=statistics.median(g.hip_y + g.legs_px for g in span), ref=ref)

    def _on_floor(self, g: BodyGeometry, stand: _Stand) -> bool:
        """Sitting or lying on the floor where they last stood: the hips down at the level their feet stood on
        (floor_hip_max) and the torso midpoint min_drop lower than standing. The floor line only holds near that
        spot: a body grown NEARER_SCALE larger came toward the camera (which moves it down the image too) and
        one that moved a body height sideways is somewhere else; neither counts."""
        ref = stand.ref
        if g.torso_px > NEARER_SCALE * ref.torso or abs(g.hip_x - ref.hip_x) > ref.height:
            return False
        hips_up = (stand.foot_y - g.hip_y) / ref.height
        return hips_up <= self.s.floor_hip_max and (_centre(g) - ref.centre_y) / ref.height >= self.s.min_drop

    def _follow_floor(self, tr: _Track, now: _Sample) -> None:
        """The "on the floor" run of a person not (yet) in an incident, however they got there. It holds
        through keypoint dropouts and brief off-floor poses; it ends when they are off the floor for recover_s
        or stand upright (legs under them) at all."""
        if tr.state == "down" or tr.stand is None:
            tr.floor_since = tr.off_floor_since = None
            return
        g, t = now.g, now.t
        if self._on_floor(g, tr.stand) and not self._in_rest_zone(tr, g):
            if tr.floor_since is None:
                tr.floor_since = t
            tr.off_floor_since = None
        elif tr.floor_since is not None:
            if g.legs_px is not None and self._is_upright(g, tr.stand.ref):
                tr.floor_since = tr.off_floor_since = None
                return
            tr.off_floor_since = t if tr.off_floor_since is None else tr.off_floor_since
            if t - tr.off_floor_since >= self.s.recover_s:
                tr.floor_since = tr.off_floor_since = None

    def _in_rest_zone(self, tr: _Track, g: Optional[BodyGeometry] = None) -> bool:
        """Whether the person's hips are in a "rest" zone (bed, sofa) of the configuration."""
        if not self.s.zones:
            return False
        if g is None:
            if not tr.samples:
                return False
            g = tr.samples[-1].g
        return self._point_in_rest(g.hip_x, g.hip_y, tr.size)

    def _point_in_rest(self, x: float, y: float, size: tuple) -> bool:
        if not size or not size[0] or not size[1]:
            return False
        return in_zone(self.s.zones, "rest", x / size[0], y / size[1])

    def _tick(self, tr: _Track, t: float, frame: int) -> list[Event]:
        """Time-driven transitions; runs whether or not the person was measured in this frame."""
        if tr.state == "falling":
            f = _incident(tr)
            if f.down_open and f.down_to is not None and t > f.down_to:
                f.down_to = t
                # found but not measured (MoveNet scores a lying torso low) keeps the body down; anything else ends it
                f.down_open = tr.last_seen == t and tr.samples[-1].t != t
            if t - f.t < self.s.settle_s:
                return []
            if f.measured == f.down == 1 and t - f.t < LOST_LYING_S:
                return []  # one pose, down, and none since: too few to judge, wait for more (see _lost_lying)
            mostly_down = bool(f.measured) and f.down / f.measured >= self.s.settle_fraction and f.down >= 2
            stayed_down = self._lost_lying(f) or (mostly_down and self._seen_down_long(tr, f, t))
            if mostly_down and not stayed_down and t - f.t <= self.s.window_max_s:
                return []  # every frame so far down, but not yet seen down for settle_s: wait for more frames
            if stayed_down and f.hip_drop >= self.s.min_hip_drop:
                if f.folded and t - f.t < self.s.confirm_s:
                    return []  # squatting or sitting upright: a fall only if they are still down confirm_s later
                if self._began_in_rest_zone(tr, f):
                    log.debug("track %s: drop onto a rest zone that began in one: lying down, not a fall", tr.track)
                    tr.state, tr.fall = "upright", None
                    return []
                tr.state = "down"
                f.event_t = t
                tr.last_fall_t = t
                tr.floor_since = tr.off_floor_since = None
                if self._continues_lost_incident(tr):
                    return []
                if self.margins is not None:
                    self.margins.fell(self._attempt(tr, f, t, "fall"))
                return [self._event("fall", tr, t, frame, confidence=self._confidence(f))]
            # Still down but the hips have not come down yet (a side fall lands hips last): wait, within the
            # window; a bend keeps its hips up and runs out of time here.
            if not stayed_down or t - f.t > self.s.window_max_s:
                if self.margins is not None:
                    self.margins.missed(self._attempt(tr, f, t, "hips up" if stayed_down else "not down"))
                log.debug(
                    "track %s: drop at t=%.2f did not end down (%d/%d, hips %.2f)",
                    tr.track,
                    f.t,
                    f.down,
                    f.measured,
                    f.hip_drop,
                )
                tr.state, tr.fall = "upright", None
        elif tr.state == "down":
            f = _incident(tr)
            assert f.event_t is not None  # set when the track went down
            if not f.person_down_sent and t - f.event_t >= self.s.down_alert_s and not self._in_rest_zone(tr):
                f.person_down_sent = True
                return [self._event("person_down", tr, t, frame, confidence=self._confidence(f))]
        elif tr.state == "upright" and tr.floor_since is not None and t - tr.floor_since >= self.s.down_alert_s:
            return self._unseen_fall(tr, t, frame)
        return []

    def _unseen_fall(self, tr: _Track, t: float, frame: int) -> list[Event]:
        """On the floor down_alert_s with no fall seen (a slow slide down a wall, a fall out of view): the
        incident opens with `person_down` (after_fall false) and ends like any other, with `recovered`."""
        since = tr.floor_since
        assert tr.stand is not None and since is not None  # on the floor is measured from a standing pose
        ref = tr.stand.ref
        g = tr.samples[-1].g if tr.samples else None
        drop = (_centre(g) - ref.centre_y) / ref.height if g is not None else 0.0
        angle = g.spine_angle_deg if g is not None else ref.angle
        f = _Fall(
            t=since,
            ref=ref,
            drop=drop,
            turn=angle - ref.angle,
            rate=0.0,
            angle=angle,
            need=self._needed_drop(angle - ref.angle),
            score=0.0,
            down=1,
            measured=1,
            event_t=since,
            person_down_sent=True,
            after_fall=False,
        )
        tr.state, tr.fall = "down", f
        tr.floor_since = tr.off_floor_since = None
        return [self._event("person_down", tr, t, frame, confidence=min(1.0, 0.5 + 0.5 * g.score) if g else 0.5)]

    def _began_in_rest_zone(self, tr: _Track, f: _Fall) -> bool:
        """A drop that ends on a rest zone is a fall only if it began outside it (lying back onto the bed is not)."""
        if not self.s.zones or not tr.samples:
            return False
        g = tr.samples[-1].g
        return self._point_in_rest(g.hip_x, g.hip_y, tr.size) and self._point_in_rest(f.ref.hip_x, f.ref.hip_y, tr.size)

    def _continues_lost_incident(self, tr: _Track) -> bool:
        """A `fall` right where a person on the floor not in view was last seen is that person found again
        under another id (a partly hidden body the detector lost and re-found). A fallen one's incident goes
        on under the new id, so there is one alarm, not a second `fall`; a time on the floor with no fall seen
        is superseded by this incident."""
        g = tr.samples[-1].g
        for key, old in list(self._tracks.items()):
            if old is tr or not _on_record(old) or not old.samples or old.last_seen >= tr.last_seen:
                continue
            last = old.samples[-1].g
            scale = _floor_ref(old).height
            if np.hypot(_centre(last) - _centre(g), _centre_x(last) - _centre_x(g)) > ADOPT_DISTANCE * scale:
                continue
            del self._tracks[key]
            if old.state == "down":
                log.info(
                    "%s: track %s falls where fallen track %s lies: the same incident",
                    self.source or "-",
                    tr.track,
                    key,
                )
                tr.fall = old.fall
                tr.last_fall_t = old.last_fall_t
                return True
        return False

    # -- the rule ------------------------------------------------------------------------------------------
    def _reference(self, tr: _Track, t: float, size: tuple[int, int]) -> Optional[_Ref]:
        if tr.first_seen is None or t - tr.first_seen < self.s.reference_s:
            return None  # a median over less than reference_s of the person is no settled "before" yet
        span = [s.g for s in tr.samples if s.t >= t - self.s.reference_s]
        if len(span) < MIN_REFERENCE_SAMPLES:
            return None
        ref = _Ref(
            centre_y=statistics.median(_centre(g) for g in span),
            hip_y=statistics.median(g.hip_y for g in span),
            angle=statistics.median(g.spine_angle_deg for g in span),
            height=statistics.median(g.height_px for g in span),
            hip_x=statistics.median(g.hip_x for g in span),
            torso=statistics.median(g.torso_px for g in span),
        )
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
        closest: Optional[tuple] = None  # the (drop, need, rate) nearest to or furthest past both thresholds
        peak_speed = 0.0  # fastest torso descent between the candidate "before" and now (pixels/s)
        for s in reversed(tr.samples):
            dt = now.t - s.t
            if dt > self.s.window_max_s:
                break
            peak_speed = max(peak_speed, s.speed)
            if dt < self.s.window_min_s or s.ref is None:
                continue
            drop = (_centre(now.g) - s.ref.centre_y) / s.ref.height
            turn = self._turn(now.g, s.ref)  # signed: standing up / lying back turns it back
            rate = peak_speed / s.ref.height
            if rate > MAX_TORSO_SPEED:
                continue  # faster than a body moves: that "before" was of something else (a new track's first poses)
            need = self._needed_drop(turn)
            if drop >= need and self._standing_nearer(now.g, s.ref):
                continue  # far down the image but standing: walking toward the camera
            closest = (drop, need, rate) if closest is None else self._stronger(closest, (drop, need, rate))
            if drop < need or rate < self.s.min_descent_rate:
                continue
            score = drop / need + max(turn, 0.0) / 90.0
            if best is None or score > best.score:
                best = _Fall(
                    t=now.t,
                    ref=s.ref,
                    drop=drop,
                    turn=turn,
                    rate=rate,
                    angle=now.g.spine_angle_deg,
                    need=need,
                    score=score,
                    hip_drop=(now.g.hip_y - s.ref.hip_y) / s.ref.height,
                )
        if best is not None and closest is not None:
            best.closest = closest
        elif closest is not None:
            self._near_miss(tr, now, closest)
        return best

    def _standing_nearer(self, g: BodyGeometry, ref: _Ref) -> bool:
        """Walking toward a camera high on the wall moves the whole body down the image, torso and all, as far as
        a fall does: but the body stays upright on legs at least as long as before (nearer, they look longer).
        A torso that came down that far in a fall has no full-length legs under it."""
        return (
            g.spine_angle_deg <= self.s.upright_angle_deg
            and g.legs_px is not None
            and g.legs_px / LEG_FRACTION >= ref.height
        )

    def _closeness(self, closest: tuple) -> float:
        """How near a (drop, need, rate) comes to a candidate: the smaller of drop / need and rate / its minimum
        (1 at the thresholds)."""
        drop, need, rate = closest
        return min(drop / need, rate / self.s.min_descent_rate if self.s.min_descent_rate > 0 else 1.0)

    def _stronger(self, a: tuple, b: tuple) -> tuple:
        return b if self._closeness(b) > self._closeness(a) else a

    def _near_miss(self, tr: _Track, now: _Sample, closest: tuple) -> None:
        """Log a drop that fell short of a candidate when it is the nearest miss so far."""
        if self.margins is None:
            return
        nearest = self.margins.nearest_miss
        if nearest is None or self._closeness(closest) - 1.0 > nearest.margin:
            drop, need, rate = closest
            gates = (Gate("drop", drop, need), Gate("descent_rate", rate, self.s.min_descent_rate))
            self.margins.missed(Attempt(now.t, tr.track, "no candidate", gates))

    def _follow_margin(self, tr: _Track, f: _Fall, now: _Sample) -> None:
        """After a `fall`, the drop and descent keep being measured for the rest of the fall window: stricter
        thresholds would have raised it a little later, so its margin is the strongest evidence in the window."""
        cand = self._candidate(tr, now)
        if cand is None or self._closeness(cand.closest) <= self._closeness(f.closest):
            return
        f.closest = cand.closest
        assert f.event_t is not None and self.margins is not None
        self.margins.fell(self._attempt(tr, f, f.event_t, "fall"))

    def _attempt(self, tr: _Track, f: _Fall, t: float, outcome: str) -> Attempt:
        """The gates of a fall candidate that was decided at ``t``: raised as `fall` or given up."""
        share = 1.0 if self._lost_lying(f) else (f.down / f.measured if f.measured else 0.0)
        drop, need, rate = f.closest  # the drop and descent at their strongest while the attempt lasted
        gates = [
            Gate("drop", drop, need),
            Gate("descent_rate", rate, self.s.min_descent_rate),
            Gate("hip_drop", f.hip_drop, self.s.min_hip_drop),
            Gate("settle", share, self.s.settle_fraction),
        ]
        if outcome == "got up":  # landed squatting or sitting upright and got up: how long it stayed down decided
            gates.append(Gate("confirm_s", t - f.t, self.s.confirm_s))
        return Attempt(t, tr.track, outcome, tuple(gates))

    def _start_falling(self, tr: _Track, cand: Optional[_Fall], now: _Sample) -> None:
        if cand is None:
            return
        if tr.state == "falling" and tr.fall is not None:  # a fresh candidate of the same attempt
            cand.closest = self._stronger(tr.fall.closest, cand.closest)
        cand.measured, cand.down = 1, int(self._is_down(now.g, cand))
        cand.max_angle = now.g.spine_angle_deg
        if cand.down:
            cand.down_from, cand.down_to, cand.down_open = now.t, now.t, True
        tr.state, tr.fall = "falling", cand
        log.debug("track %s: drop %.2f turn %.0f rate %.2f at t=%.2f", tr.track, cand.drop, cand.turn, cand.rate, now.t)

    def _is_down(self, g: BodyGeometry, f: _Fall) -> bool:
        """Near horizontal, or the torso still as low as the fall needs against the same "before", for the spine's
        turn now or at the drop, whichever is larger: a torso seen turned at the landing is measured from then on
        by how low it stays, not by whether each frame shows the turn again (foreshortening counts only past
        LYING_TORSO, so a torso a little longer in the next frame would otherwise need twice the drop)."""
        drop = (_centre(g) - f.ref.centre_y) / f.ref.height
        turn = max(self._turn(g, f.ref), f.turn)
        return g.spine_angle_deg >= self.s.down_angle_deg or drop >= self._needed_drop(turn)

    @staticmethod
    def _turn(g: BodyGeometry, ref: _Ref) -> float:
        """How far the spine turned from the "before" pose (degrees): in the image plane, or towards or away
        from the camera, which the image shows as a torso shorter than before rather than as an angle (a fall
        along the line of sight). Foreshortening counts once the torso is under LYING_TORSO of its length, so
        a lean forward (squatting, picking something up) or a step away is not mistaken for a topple."""
        turn = g.spine_angle_deg - ref.angle
        if ref.torso > 0 and g.torso_px < LYING_TORSO * ref.torso:
            turn = max(turn, math.degrees(math.acos(g.torso_px / ref.torso)))
        return turn

    def _folded(self, g: BodyGeometry, ref: _Ref) -> bool:
        """Squatting or sitting: the spine really upright (near vertical in the image and as long as before, so
        not lying along the line of sight) and the legs folded under the hips (knees and ankles seen, the ankles
        within FOLDED_FEET torso lengths of the hips)."""
        if g.spine_angle_deg > self.s.upright_angle_deg or ref.torso <= 0 or g.torso_px < UPRIGHT_TORSO * ref.torso:
            return False
        return g.knees and g.feet_px is not None and g.feet_px <= FOLDED_FEET * g.torso_px

    def _is_upright(self, g: BodyGeometry, ref: _Ref) -> bool:
        """Spine near vertical, and either the torso back above fall level at its upright length (standing, or
        sitting on a chair; a partial pose of someone lying, a shoulder and a hip found on the furniture they
        lie behind, rarely has it) or the legs upright under the body at nearly full length (standing up
        somewhere nearer the camera, which puts the whole body lower in the image). Sitting up on the floor is
        neither."""
        if g.spine_angle_deg > self.s.upright_angle_deg:
            return False
        if (_centre(g) - ref.centre_y) / ref.height < self.s.min_drop and g.torso_px >= UPRIGHT_TORSO * ref.torso:
            return True
        return g.legs_px is not None and g.legs_px / LEG_FRACTION >= STANDING_LEGS * ref.height

    # -- events --------------------------------------------------------------------------------------------
    def _confidence(self, f: _Fall) -> float:
        """0.5 at the thresholds, towards 1 with more evidence, scaled by how consistently the body looked down."""
        strength = 0.6 * min(1.0, 0.5 * f.drop / f.need) + 0.4 * min(
            1.0, 0.5 * f.rate / max(self.s.min_descent_rate, 1e-6)
        )
        consistency = f.down / f.measured if f.measured else 0.0
        return max(0.0, min(1.0, strength * (0.5 + 0.5 * consistency)))

    @staticmethod
    def _last_score(tr: _Track) -> float:
        return float(tr.samples[-1].g.score) if tr.samples else 0.0

    def _event(
        self, kind: str, tr: _Track, t: float, frame: int, confidence: float, fall: Optional[_Fall] = None
    ) -> Event:
        f = fall or _incident(tr)
        last = tr.samples[-1].g if tr.samples else None
        angle = last.spine_angle_deg if last is not None else f.angle
        if kind == "fall":
            angle = f.angle
        log.info(
            "%s: %s track %s at t=%.2f (drop %.2f, turn %.0f, rate %.2f)",
            self.source or "-",
            kind,
            tr.track,
            t,
            f.drop,
            f.turn,
            f.rate,
        )
        return Event(
            event=kind,
            source=self.source,
            t=t,
            frame=frame,
            track=tr.track,
            confidence=confidence,
            spine_angle_deg=angle,
            angle_change_deg=angle - f.ref.angle,
            descent_rate=f.rate if kind != "recovered" else 0.0,
            box=list(tr.last_box),
            after_fall=f.after_fall if kind == "person_down" else None,
        )


def make_rules(settings: RuleSettings, source: str = "", margins: bool = False) -> Rules:
    """The rule strategy ``settings.strategy`` names, for one video source; ``margins``: keep each decision's
    margins (fallwatch eval; the ambianic baseline keeps none)."""
    if settings.strategy == "fallwatch":
        return FallRules(settings, source, margins=margins)
    if settings.strategy == "ambianic":
        from .ambianic import AmbianicRules

        return AmbianicRules(settings, source)
    raise ValueError(f"unknown rules.strategy {settings.strategy!r} (expected one of {', '.join(STRATEGIES)})")
