"""Tracking: stable ids, crops from the previous frame's keypoints, and tracks that outlive the detector.

Per frame: every track's next crop comes from its previous keypoints (MoveNet's "smart cropping"); the detector
runs when nobody is in view and every ``detect_every`` frames to find newcomers; a track lives on while the
estimator finds a confident torso in its crop, detector or not (the SSD misses lying people); when nobody is
tracked and the detector finds nobody, the estimator looks at the whole frame (letterboxed) before giving up.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .detector import Detection, Detector, containment, iou
from .estimator import (
    L_HIP,
    L_SHOULDER,
    R_HIP,
    R_SHOULDER,
    Crop,
    Estimate,
    Estimator,
    crop_around_box,
    torso_score,
    whole_frame_crop,
)
from .smoothing import OneEuroFilter
from .types import Person

log = logging.getLogger(__name__)

KP_THRESHOLD = 0.2  # a keypoint at least this confident shapes the next crop and the box
TORSO = (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP)
RETRY_COOLDOWN_FRAMES = 5
CROP_SHRINK = 0.85  # a crop shrinks by at most this factor from one frame to the next
NIGHT_CROP_SHRINK = 0.95  # ...and by this much when the crop was dark (night enhancement on)


@dataclass
class TrackerSettings:
    detect_every: int = 15
    track_timeout_s: float = 2.0
    max_persons: int = 4
    min_torso_score: float = 0.2
    rotation_retry: bool = True
    retry_torso_score: float = 0.4  # below this torso score, also try the crop rotated by ±90°
    # a find on (about) the whole frame must be this sure: to start a track, or to re-find a lost one
    new_track_torso_score: float = 0.35
    smoothing: bool = True
    min_cutoff: float = 1.0
    beta: float = 5.0
    d_cutoff: float = 1.0
    # polygons (normalised 0-1 x, y points) where people seen are not people (TV, mirror, poster)
    ignore_zones: tuple = ()
    # Nobody in view for longer than this: the whole-frame search (detector, whole-frame estimate, a lost track's
    # search grown to the frame) runs only every idle_search_every_s, not every frame (an empty or dark room
    # otherwise costs the detector and three estimates per frame: 3x a tracked person's work at night).
    idle_after_s: float = 0.5
    idle_search_every_s: float = 0.4
    # A track missed for up to this many frames is held (searched in its grown crop) without calling the
    # detector: at night a crop misses the person for a frame now and then, and the next frame's finds them.
    # Off (0): 1 spares the detector on a single missed frame (a quarter of the night's runs), but by day a crop
    # collapsed onto a lying person (84 px) then grows back too slowly and the track is lost.
    hold_frames: int = 0


def in_ignore_zone(box: tuple[float, float, float, float], zones: tuple, fw: int, fh: int) -> bool:
    """Whether a person's box lies inside one of the ignore polygons (its inner 80 %: the figure on a TV or in
    a mirror fits inside it, a real person passing in front of it does not)."""
    if not zones:
        return False
    import cv2

    x0, y0, x1, y1 = box
    dx, dy = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    corners = [
        ((x0 + dx) / fw, (y0 + dy) / fh),
        ((x1 - dx) / fw, (y0 + dy) / fh),
        ((x0 + dx) / fw, (y1 - dy) / fh),
        ((x1 - dx) / fw, (y1 - dy) / fh),
    ]
    for zone in zones:
        poly = np.asarray(zone, dtype=np.float32).reshape(-1, 1, 2)
        if all(cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for x, y in corners):
            return True
    return False


@dataclass
class TrackerState:
    """What a tracker carries from frame to frame besides its tracks (all of it put back by ``restore``)."""

    next_id: int = 1
    since_detect: int = 0
    anyone_last_frame: bool = False
    dark: bool = False  # the newest estimator crop was a dark one that night enhancement had to stretch
    empty_since: Optional[float] = None  # when the tracker last saw nobody after seeing someone
    last_search: Optional[float] = None  # when the whole-frame search last ran


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]
    kps: np.ndarray  # raw (17, 3)
    last_seen: float
    angle: float = 0.0
    score: float = 0.0
    kps33: Optional[np.ndarray] = None
    smoothed: Optional[np.ndarray] = None
    filter: Optional[OneEuroFilter] = None
    crop: Optional[Crop] = None  # the crop that last found this person
    roi: Optional[Crop] = None  # BlazePose: the next region of interest its landmarks give (rotated)
    lost: int = 0  # frames since the estimator last found a torso
    retry_cooldown: int = 0  # frames to skip shape-triggered rotation retries
    updated: bool = False  # seen in the current frame
    detected: bool = False  # confirmed by the detector in the current frame
    hits: int = 0


@dataclass
class StepStats:
    detector_ran: bool = False
    detect_ms: float = 0.0
    estimate_ms: float = 0.0
    estimator_calls: int = 0
    whole_frame: bool = False


def keypoint_box(kps: np.ndarray, pad: float = 0.1) -> Optional[tuple[float, float, float, float]]:
    """Box around the confident keypoints, padded by ``pad`` of its long side; None with fewer than 3."""
    conf = kps[:, 2] >= KP_THRESHOLD
    if int(conf.sum()) < 3:
        return None
    xs, ys = kps[conf, 0], kps[conf, 1]
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    p = max(x1 - x0, y1 - y0) * pad
    return (x0 - p, y0 - p, x1 + p, y1 + p)


def crop_from_keypoints(
    kps: np.ndarray, fallback_box: tuple[float, float, float, float], frame_w: int, frame_h: int, angle: float = 0.0
) -> Crop:
    """The next crop from the previous keypoints (MoveNet's smart cropping, centred on the body's box rather
    than the hips so a squatting or lying person stays in the middle): wide enough for body and torso."""
    conf = kps[:, 2] >= KP_THRESHOLD
    if int(conf.sum()) < 3:
        return crop_around_box(fallback_box, angle=angle)
    xs, ys = kps[conf, 0], kps[conf, 1]
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    body = max(x1 - x0, y1 - y0) / 2.0
    torso_idx = [i for i in TORSO if conf[i]]
    torso = float(np.abs(kps[torso_idx, :2] - (cx, cy)).max()) if torso_idx else 0.0
    half = max(body * 1.3, torso * 1.9, 16.0)
    half = min(half, max(frame_w, frame_h) * 0.75)
    return Crop(cx, cy, 2.0 * half, angle)


def _quality(kps: np.ndarray) -> float:
    return 0.5 * torso_score(kps) + 0.5 * float(kps[:, 2].mean())


class Tracker:
    def __init__(self, estimator: Estimator, detector: Detector, settings: TrackerSettings):
        self.estimator = estimator
        self.detector = detector
        self.s = settings
        self.tracks: list[Track] = []
        self.state = TrackerState()

    def reset(self) -> None:
        self.tracks.clear()
        self.state.since_detect = 0
        self.state.anyone_last_frame = False
        self.state.empty_since = self.state.last_search = None

    def snapshot(self) -> tuple[list[Track], TrackerState]:
        """The tracker's state, to put back with :meth:`restore` when a step fails half-way (a step reassigns
        track fields and filter arrays rather than changing them in place, so shallow copies suffice)."""
        tracks = []
        for tr in self.tracks:
            c = copy.copy(tr)
            if tr.filter is not None:
                c.filter = copy.copy(tr.filter)
            tracks.append(c)
        return tracks, dataclasses.replace(self.state)

    def restore(self, snapshot: tuple[list[Track], TrackerState]) -> None:
        tracks, state = snapshot
        self.tracks, self.state = list(tracks), dataclasses.replace(state)

    def _search_due(self, t: float) -> bool:
        """Whether this frame runs the whole-frame search: always while someone was in view a moment ago (a
        dropout is re-found at once), then every idle_search_every_s."""
        if self.state.anyone_last_frame or self.state.empty_since is None or self.state.last_search is None:
            return True
        if (
            t < self.state.empty_since or t < self.state.last_search
        ):  # time went back (a restarted source): start afresh
            return True
        if t - self.state.empty_since < self.s.idle_after_s:
            return True
        return t - self.state.last_search >= self.s.idle_search_every_s - 1e-6

    # -- estimation ------------------------------------------------------------------------------------------
    def _estimate(self, frame: np.ndarray, crop: Crop, st: StepStats) -> Estimate:
        t0 = time.perf_counter()
        e = self.estimator.estimate(frame, crop)
        st.estimate_ms += (time.perf_counter() - t0) * 1000.0
        st.estimator_calls += 1
        self.state.dark = e.dark
        return e

    def _estimate_best(
        self,
        frame: np.ndarray,
        crop: Crop,
        box: tuple[float, float, float, float],
        st: StepStats,
        aligned: bool = False,
        track: Optional[Track] = None,
    ) -> Estimate:
        """Estimate on the crop at its angle; retry rotated by ±90° when the person may be lying (not when the
        crop is already aligned with the body, as BlazePose's regions of interest are)."""
        best = self._estimate(frame, crop, st)
        if not self.s.rotation_retry or aligned:
            return best
        wide = (box[2] - box[0]) > (box[3] - box[1])
        weak = torso_score(best.kps) < self.s.retry_torso_score
        if not (weak or (crop.angle == 0 and wide) or (crop.angle != 0 and not wide)):
            return best
        w, h = box[2] - box[0], box[3] - box[1]
        # The shape alone asked for a retry and the box is only a little wider than tall (a person sitting with
        # legs stretched out), or the torso is weak but there in an upright crop and box (the dark: night scores
        # sit below retry_torso_score all the time); either way the last retry kept this angle: skip retries for
        # a few frames. A box that turns wide (a fall) asks again at once.
        sitting = not weak and h < w < 1.5 * h
        dim_upright = weak and crop.angle == 0 and not wide and torso_score(best.kps) >= self.s.min_torso_score
        if track is not None and track.retry_cooldown > 0 and (sitting or dim_upright):
            track.retry_cooldown -= 1
            return best
        best_q = _quality(best.kps)
        first = best
        for angle in (0.0, 90.0, -90.0):
            if angle == crop.angle:
                continue
            e = self._estimate(frame, Crop(crop.cx, crop.cy, crop.size, angle), st)
            q = _quality(e.kps)
            if q > best_q:
                best_q, best = q, e
        if track is not None:
            track.retry_cooldown = RETRY_COOLDOWN_FRAMES if best is first else 0
        return best

    # -- one frame -------------------------------------------------------------------------------------------
    def step(self, frame: np.ndarray, t: float) -> tuple[list[Person], StepStats]:
        st = StepStats()
        fh, fw = frame.shape[:2]
        # Expire first: after a gap in the frames (a stalled camera) a track not seen for track_timeout_s is
        # over, even if someone now stands where it was.
        self.tracks = [tr for tr in self.tracks if self._alive(tr, t)]
        for tr in self.tracks:
            tr.updated = tr.detected = False

        if self.state.anyone_last_frame:
            self.state.empty_since = None
        elif self.state.empty_since is None:
            self.state.empty_since = t
        due = self._search_due(t)

        # 1. Follow every track from its previous keypoints.
        searched_whole = False  # a lost track's search already covered the whole frame (at every angle)
        for tr in self.tracks:
            crop, aligned = self._next_crop(tr, fw, fh)
            if tr.lost > 0 and crop.size >= max(fw, fh):
                if not due:  # a search of the whole frame: on the idle schedule
                    tr.lost += 1
                    continue
                searched_whole |= self.s.rotation_retry
            e = self._estimate_best(frame, crop, tr.box, st, aligned, tr)
            # A lost track re-found by a search grown to about the whole frame needs the evidence a new track
            # needs (as the whole-frame pass does): over an empty room such a search otherwise meets some patch
            # of background that passes for a weak torso, and a ghost lives on.
            wide_search = tr.lost > 0 and crop.size >= 0.8 * max(fw, fh)
            need = max(self.s.new_track_torso_score, self.s.min_torso_score) if wide_search else self.s.min_torso_score
            if torso_score(e.kps) >= need:
                self._update(tr, e, t)
            else:
                tr.lost += 1

        # 2. The detector: when nobody was in view, and every detect_every frames for newcomers.
        self.state.since_detect += 1
        # someone in view: found this frame, or held through a missed frame or two
        anyone = any(tr.updated or 0 < tr.lost <= self.s.hold_frames for tr in self.tracks)
        if (due and not (self.state.anyone_last_frame and anyone)) or self.state.since_detect >= self.s.detect_every:
            self.state.since_detect = 0
            if not anyone:
                self.state.last_search = t
            st.detector_ran = True
            t0 = time.perf_counter()
            dets = self.detector.detect(frame)
            st.detect_ms = (time.perf_counter() - t0) * 1000.0
            dets = [d for d in dets if not in_ignore_zone(d.box, self.s.ignore_zones, fw, fh)]
            found = self._merge_detections(frame, dets, t, st)

            # 3. Nobody tracked and nobody detected: look at the whole frame before giving up.
            if not found and not searched_whole and not any(tr.updated for tr in self.tracks):
                st.whole_frame = True
                e = self._estimate_best(frame, whole_frame_crop(fw, fh), (0.0, 0.0, float(fw), float(fh)), st)
                if torso_score(e.kps) >= max(self.s.new_track_torso_score, self.s.min_torso_score):
                    box = keypoint_box(e.kps)
                    known = self._find_track(box) if box is not None else None
                    if box is not None and known is None and not in_ignore_zone(box, self.s.ignore_zones, fw, fh):
                        self._new_track(e, box, t)
                    elif known is not None:  # a lost track found again (a dark, noisy frame lost it): same person
                        self._update(known, e, t, box)

        self._drop_duplicates()
        self.tracks = [tr for tr in self.tracks if self._alive(tr, t)]
        self.state.anyone_last_frame = any(tr.updated or 0 < tr.lost <= self.s.hold_frames for tr in self.tracks)
        return [self._person(tr) for tr in self.tracks if tr.updated], st

    def _alive(self, tr: Track, t: float) -> bool:
        """Seen within track_timeout_s of ``t``, either way: when time jumps back (a restarted source) a track
        last seen "in the future" is as stale as one not seen for that long, not immortal until time catches up."""
        return abs(t - tr.last_seen) <= self.s.track_timeout_s

    def _next_crop(self, tr: Track, fw: int, fh: int) -> tuple[Crop, bool]:
        """The crop to look for this track in, and whether it is aligned with the body already."""
        longest = float(max(fw, fh))
        if tr.lost and tr.crop is not None:
            # Lost: search a growing area around where the person was last found.
            c = tr.crop
            # (the exponent capped: 1.4 ** 30 outgrows any frame, and 1.4 ** 2110 overflows a float, which a
            # 60 s track_timeout_s at 60 fps would reach)
            return Crop(c.cx, c.cy, min(c.size * 1.4 ** min(tr.lost, 30), longest * 1.2), c.angle), False
        if tr.roi is not None:
            return tr.roi, True
        crop = crop_from_keypoints(tr.kps, tr.box, fw, fh, tr.angle)
        if tr.crop is not None:
            # People do not shrink fast: a crop that collapses onto the few keypoints it is sure of (a person
            # lying on a bed, half hidden) loses the rest of the body, and then the person.
            # In the dark fewer keypoints pass KP_THRESHOLD, so the box they give is too small: shrink slower.
            shrink = NIGHT_CROP_SHRINK if self.state.dark else CROP_SHRINK
            crop.size = min(max(crop.size, tr.crop.size * shrink), longest * 1.2)
        return crop, False

    def _merge_detections(self, frame: np.ndarray, dets: list[Detection], t: float, st: StepStats) -> int:
        """Match detections to tracks, re-find lost tracks, start new ones; returns how many people they gave."""
        taken: set[int] = set()
        found = 0
        for det in dets:
            tr = self._find_track(det.box, exclude=taken)
            if tr is not None:
                taken.add(tr.id)
                tr.detected = True
                found += 1
                if not tr.updated:
                    # The crop lost the person but the detector has them: estimate on its box (or region).
                    crop = det.crop or crop_around_box(det.box, angle=tr.angle)
                    e = self._estimate_best(frame, crop, det.box, st, aligned=det.crop is not None)
                    # Only a torso found there gives the track new keypoints: at night the SSD's box is often a
                    # part of the person, and the estimate on it junk (torso 0.07). The search moves there.
                    if torso_score(e.kps) >= self.s.min_torso_score:
                        self._update(tr, e, t, det.box)
                    else:
                        tr.crop, tr.box = crop, det.box
                continue
            if sum(1 for tr in self.tracks if self._alive(tr, t)) >= self.s.max_persons:
                continue
            if det.keypoints is not None and torso_score(det.keypoints) >= self.s.retry_torso_score:
                e = Estimate(det.keypoints, crop_around_box(det.box))
            else:
                crop = det.crop or crop_around_box(det.box)
                e = self._estimate_best(frame, crop, det.box, st, aligned=det.crop is not None)
            if torso_score(e.kps) < self.s.min_torso_score:
                continue  # the estimator sees no body where the detector saw a person: a false detection
            tr = self._new_track(e, det.box, t)
            tr.detected = True
            taken.add(tr.id)
            found += 1
        return found

    def _find_track(
        self, box: tuple[float, float, float, float], exclude: AbstractSet[int] = frozenset()
    ) -> Optional[Track]:
        """The track best overlapping ``box`` (IoU ≥ 0.3, one inside the other, or its hip centre inside)."""
        best, best_iou = None, 0.0
        for tr in self.tracks:
            if tr.id in exclude:
                continue
            o = iou(box, tr.box)
            if containment(box, tr.box) >= 0.7 or containment(tr.box, box) >= 0.7:
                o = max(o, 0.3)  # a part of (or the whole around) a tracked person is that person
            hips = tr.kps[[L_HIP, R_HIP]]
            if o < 0.3 and (hips[:, 2] >= KP_THRESHOLD).all():
                hx, hy = hips[:, 0].mean(), hips[:, 1].mean()
                if box[0] <= hx <= box[2] and box[1] <= hy <= box[3]:
                    o = max(o, 0.3)
            if o >= 0.3 and o > best_iou:
                best, best_iou = tr, o
        return best

    def _new_track(self, e: Estimate, box: tuple[float, float, float, float], t: float) -> Track:
        tr = Track(self.state.next_id, box, e.kps, t, e.crop.angle)
        if self.s.smoothing:
            tr.filter = OneEuroFilter(self.s.min_cutoff, self.s.beta, self.s.d_cutoff)
        self.state.next_id += 1
        self.tracks.append(tr)
        self._update(tr, e, t, box)
        log.debug("new track %d at %s", tr.id, [round(v) for v in box])
        return tr

    def _update(
        self, tr: Track, e: Estimate, t: float, fallback_box: Optional[tuple[float, float, float, float]] = None
    ) -> None:
        tr.kps, tr.angle, tr.kps33, tr.roi, tr.crop = e.kps, e.crop.angle, e.kps33, e.roi, e.crop
        tr.lost = 0
        tr.box = keypoint_box(e.kps) or fallback_box or tr.box
        tr.score = float(e.kps[:, 2].mean())
        tr.last_seen = t
        tr.updated = True
        tr.hits += 1
        if tr.filter is not None:
            side = max(tr.box[2] - tr.box[0], tr.box[3] - tr.box[1])
            tr.smoothed = tr.filter(e.kps, t, side)
        else:
            tr.smoothed = e.kps

    def _drop_duplicates(self) -> None:
        """Two tracks that converged on one person: keep the older id."""
        live = sorted((tr for tr in self.tracks if tr.updated), key=lambda tr: tr.id)
        drop: set[int] = set()
        for i, a in enumerate(live):
            if a.id in drop:
                continue
            for b in live[i + 1 :]:
                if b.id not in drop and (
                    iou(a.box, b.box) > 0.5 or containment(b.box, a.box) > 0.7 or containment(a.box, b.box) > 0.7
                ):
                    drop.add(b.id)
        if drop:
            self.tracks = [tr for tr in self.tracks if tr.id not in drop]

    @staticmethod
    def _person(tr: Track) -> Person:
        smoothed = tr.smoothed if tr.smoothed is not None else tr.kps
        x0, y0, x1, y1 = tr.box
        return Person(
            track_id=tr.id,
            box=(float(x0), float(y0), float(x1), float(y1)),
            score=tr.score,
            keypoints=smoothed,
            keypoints_raw=tr.kps,
            keypoints33=tr.kps33,
            detected=tr.detected,
        )
