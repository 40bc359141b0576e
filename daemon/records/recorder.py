"""Event records kept locally: for every `fall` and `person_down`, a folder in the state directory with a short
clip (events.pre_s before to events.post_s after), the pose recording of that span (JSONL, `replay` reads it),
the annotated snapshot and the event JSON, where the user's label ("fall" / "false_alarm") is stored too (and in
the label index, ``labels.json``, where it outlives the record: see records/store.py, which also checks every record
read back).

The pipeline thread only hands over references (``on_frame``, ``on_event``: a non-blocking queue put). Two
low-priority threads do the rest: "events-frames" draws and JPEG-encodes each frame at clip height into the
pre-roll ring (bounded in memory: a few MB of JPEG, never raw frames), "events-writer" encodes clips and writes
records. A slow, full or read-only disk costs records (one warning), never detection or MQTT.

Record layout: <dir>/<event id>/{event.json, clip.avi, pose.jsonl, snapshot.jpg}. The clip is kept as MJPEG
(cheap to write: 0.12 CPU-s for 10 s of 320x240, where VP8 takes 1.8 s, measured here), and turned into a
browser-playable clip.mp4 (H.264) or clip.webm (VP8) the first time someone asks to watch it.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import functools
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
from fallwatch.config.schema import EventsConfig
from fallwatch.daemon.records.clips import RECORD_CODEC
from fallwatch.daemon.records.folder import RecordFolder
from fallwatch.daemon.records.store import (
    ID_RE,
)
from fallwatch.rules.events import ALARMS

log = logging.getLogger(__name__)

RECORDED_EVENTS = ALARMS  # a clip for each alarm; "recovered" ends none
FRAME_QUEUE = 8  # frames waiting to be drawn; more are skipped (the clip loses a frame, detection nothing)
MAX_ACTIVE = 4  # records collecting their post-roll at once
WRITE_QUEUE = 4  # finished records waiting for the disk; beyond, new ones are dropped with a warning
PLAIN_BACKGROUND = 48  # grey of the privacy mode's background
# Free space kept beyond each frame written: the clip's index and the record's small files. A write on a full disk
# would fail inside OpenCV, once per frame, each with a line of its own on stderr; checking first keeps it to our
# one warning, and the partial record is removed.
DISK_MARGIN = 256 * 1024


@functools.lru_cache(maxsize=1)  # one camera frame size at a time
def plain_frame(shape: tuple[int, ...]) -> np.ndarray:
    """A shared, read-only plain background the size of a camera frame (privacy: skeleton)."""
    img = np.full(shape, PLAIN_BACKGROUND, dtype=np.uint8)
    img.flags.writeable = False
    return img


def _pose_line(t: float, frame_no: int, size: tuple[int, int], persons: list) -> dict:
    def pts(kps: Any) -> list:
        return [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in np.asarray(kps)[:17, :3]]

    people = []
    for p in persons:
        d: dict = {"track": int(p.track_id), "box": [round(float(v), 2) for v in p.box], "keypoints": pts(p.keypoints)}
        if getattr(p, "keypoints_raw", None) is not None:
            d["keypoints_raw"] = pts(p.keypoints_raw)
        people.append(d)
    return {"t": round(float(t), 4), "frame": int(frame_no), "size": [int(size[0]), int(size[1])], "people": people}


def _scaled(person: Any, sx: float, sy: float) -> Any:
    """A copy of a pose Person with its box and keypoints in a frame scaled by (sx, sy)."""
    x0, y0, x1, y1 = person.box
    kps = np.array(person.keypoints, dtype=np.float32, copy=True)
    kps[:, 0] *= sx
    kps[:, 1] *= sy
    return dataclasses.replace(person, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy), keypoints=kps)


def _lower_priority() -> None:
    """The recorder's threads yield the CPU to the pipeline (Linux: nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def records_dir(cfg: Any) -> Path:
    """Where event records are kept: ``events.dir``, else ``events`` in the state directory (``cfg``: Config)."""
    from fallwatch.daemon.mqtt.outbox import default_state_dir

    return Path(cfg.events.dir).expanduser() if cfg.events.dir else default_state_dir(cfg.mqtt.state_dir) / "events"


def start_recorders(cfg: Any, cameras: list[str]) -> dict[str, "EventRecorder"]:
    """One recorder per camera (each keeps its own pre-roll), all writing to one folder, announced once."""
    privacy = cfg.privacy == "skeleton"
    directory = records_dir(cfg)
    return {
        name: EventRecorder(cfg.events, directory, privacy=privacy, camera=name).start(announce=i == 0)
        for i, name in enumerate(cameras)
    }


class EventRecorder(RecordFolder):
    """Keeps event records; also the store the events page, MQTT feedback and `tune` read."""

    def __init__(self, cfg: EventsConfig, directory: Path, privacy: bool = False, camera: str = "camera"):
        super().__init__(cfg, directory)
        self.privacy = privacy
        self.camera = camera
        self.frames_dropped = 0
        self.records_written = 0
        self.records_failed = 0
        self._frames: queue.Queue = queue.Queue(FRAME_QUEUE)
        self._writes: queue.Queue = queue.Queue(WRITE_QUEUE)
        self._events: collections.deque = collections.deque()
        self._ring: collections.deque = collections.deque()  # (t, jpeg, pose line)
        self._active: list[dict] = []
        self._last: Optional[tuple] = None  # newest (image, persons, states): the snapshot's source
        self._stop = threading.Event()
        self._flush = threading.Event()
        self._threads: list[threading.Thread] = []
        self._disk_warned = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, announce: bool = True) -> "EventRecorder":
        """``announce``: log where records go (once per directory: several cameras' recorders share one)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.prune()
        except OSError as exc:
            self._disk_problem(f"cannot use {self.dir}", exc)
        for name, target in (("events-frames", self._frames_loop), ("events-writer", self._writer_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if announce:
            log.info(
                "event records in %s (%.0f s before, %.0f s after, at most %.0f MB, %.0f days)%s",
                self.dir,
                self.cfg.pre_s,
                self.cfg.post_s,
                self.cfg.max_mb,
                self.cfg.keep_days,
                "; privacy: skeletons only" if self.privacy else "",
            )
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Finish the records collecting their post-roll with what they have, write them, stop. False when a
        record was still being written at the timeout (its writer thread is then left running)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in self._threads)
        self._threads = []
        return finished

    def flush(self, timeout: float = 30.0) -> bool:
        """Cut the records collecting their post-roll short and wait until every record is written (benchmarks,
        tests). True when all were."""
        self._flush.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._flush.is_set() and self._writes.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    # -- pipeline side (cheap, never blocks) -----------------------------------------------------------------
    @property
    def frames_waiting(self) -> int:
        """Frames handed over and not yet taken by the frames thread (when FRAME_QUEUE wait, the next is dropped)."""
        return self._frames.qsize()

    def on_frame(self, image: np.ndarray, t: float, frame_no: int, persons: list, states: dict) -> None:
        try:
            self._frames.put_nowait((image, float(t), int(frame_no), list(persons), dict(states)))
        except queue.Full:
            self.frames_dropped += 1

    def on_event(self, data: dict) -> None:
        if data.get("event") in RECORDED_EVENTS:
            self._events.append(dict(data))
            try:  # wake the frames thread even when no frame comes (the source ended)
                self._frames.put_nowait(None)
            except queue.Full:
                pass

    # -- the frames thread -----------------------------------------------------------------------------------
    def _frames_loop(self) -> None:
        _lower_priority()
        while True:
            try:
                item = self._frames.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is not None:
                try:
                    self._add_frame(*item)
                except Exception:
                    log.exception("event records: a frame could not be drawn")
            # An event starts its record once its own frame is drawn (its snapshot is that frame), or when no
            # frame is waiting (that one was skipped, or the source ended).
            while self._events and (
                self._frames.empty() or (self._ring and self._ring[-1][0] >= float(self._events[0].get("t", 0.0)))
            ):
                self._begin(self._events.popleft())
            if self._flush.is_set():
                for rec in self._active:
                    self._finish(rec)
                self._active = []
                self._flush.clear()
            if self._stop.is_set() and self._frames.empty():
                for rec in self._active:
                    self._finish(rec)
                self._active = []
                self._writes.put(None)
                return

    def _annotated(self, image: np.ndarray, persons: list, states: dict) -> np.ndarray:
        from fallwatch.daemon.web.overlay import draw_overlay

        return draw_overlay(plain_frame(image.shape) if self.privacy else image, persons, states)

    def _add_frame(self, image: np.ndarray, t: float, frame_no: int, persons: list, states: dict) -> None:
        self._last = (image, persons, states)
        # Scale first, then draw on the small frame: a quarter of the pixels to draw and encode.
        h = self.cfg.clip_height
        size = (max(2, int(round(image.shape[1] * h / image.shape[0])) // 2 * 2), h)
        small = (
            image
            if image.shape[0] == h
            else cv2.resize(plain_frame(image.shape) if self.privacy else image, size, interpolation=cv2.INTER_AREA)
        )
        sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
        bgr = self._annotated(small, [_scaled(p, sx, sy) for p in persons], states)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return
        entry = (t, jpeg.tobytes(), _pose_line(t, frame_no, (image.shape[1], image.shape[0]), persons))
        self._ring.append(entry)
        while self._ring and self._ring[0][0] < t - self.cfg.pre_s:
            self._ring.popleft()
        for rec in list(self._active):
            rec["frames"].append(entry)
            if t >= rec["until"]:
                self._active.remove(rec)
                self._finish(rec)

    def _begin(self, data: dict) -> None:
        snapshot = None
        if self._last is not None:
            try:
                ok, buf = cv2.imencode(".jpg", self._annotated(*self._last), [cv2.IMWRITE_JPEG_QUALITY, 85])
                snapshot = buf.tobytes() if ok else None
            except Exception:
                log.exception("event records: the snapshot could not be drawn")
        if len(self._active) >= MAX_ACTIVE:
            oldest = self._active.pop(0)
            self._finish(oldest)  # cut short rather than grow without bound
        t = float(data.get("t", 0.0))
        self._active.append(
            {
                "data": data,
                "frames": [e for e in self._ring if e[0] >= t - self.cfg.pre_s],
                "until": t + self.cfg.post_s,
                "snapshot": snapshot,
            }
        )

    def _finish(self, rec: dict) -> None:
        try:
            self._writes.put_nowait(rec)
        except queue.Full:
            self.records_failed += 1
            log.warning("event records: the disk is too slow; record of event %s dropped", rec["data"].get("id"))

    # -- the writer thread -----------------------------------------------------------------------------------
    def _writer_loop(self) -> None:
        _lower_priority()
        while True:
            rec = self._writes.get()
            if rec is None:
                self._writes.task_done()
                return
            try:
                self._write(rec)
                self.records_written += 1
                self._disk_warned = False
                self.prune()
            except OSError as exc:
                self.records_failed += 1
                self._disk_problem(f"record of event {rec['data'].get('id')} not kept", exc)
            except Exception:
                self.records_failed += 1
                log.exception("event records: writing event %s failed", rec["data"].get("id"))
            finally:
                self._writes.task_done()

    def _disk_problem(self, what: str, exc: OSError) -> None:
        # One warning per run of failures: a full or read-only disk must not flood the log.
        if not self._disk_warned:
            self._disk_warned = True
            log.warning("event records: %s (%s); detection and MQTT go on", what, exc.strerror or exc)
        else:
            log.debug("event records: %s (%s)", what, exc)

    def _write(self, rec: dict) -> None:
        data = rec["data"]
        event_id = str(data.get("id", ""))
        if not ID_RE.match(event_id):
            raise ValueError(f"event id {event_id!r} cannot name a record")
        frames = rec["frames"]
        self.dir.mkdir(parents=True, exist_ok=True)
        fourcc, ext, _ = RECORD_CODEC
        tmp = Path(tempfile.mkdtemp(prefix=f".{event_id}.", dir=self.dir))
        try:
            _need_room(tmp, sum(len(jpeg) for _, jpeg, _ in frames))  # the whole clip, before any of it
            span = frames[-1][0] - frames[0][0] if len(frames) > 1 else 0.0
            fps = (len(frames) - 1) / span if span > 0 else 10.0
            if frames:
                first = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
                if first is None:
                    raise OSError(f"event {event_id}: the first frame kept is not a readable JPEG")
                size = (first.shape[1], first.shape[0])
                writer = cv2.VideoWriter(str(tmp / f"clip{ext}"), cv2.VideoWriter.fourcc(*fourcc), fps, size)
                if not writer.isOpened():
                    raise OSError(f"cannot open a {fourcc} clip in {tmp}")
                try:
                    for _, jpeg, _ in frames:
                        _need_room(tmp, len(jpeg))
                        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                        if img is not None and (img.shape[1], img.shape[0]) == size:
                            writer.write(img)
                finally:
                    writer.release()
                if not (tmp / f"clip{ext}").is_file() or (tmp / f"clip{ext}").stat().st_size == 0:
                    raise OSError("the clip came out empty (disk full?)")
            with (tmp / "pose.jsonl").open("w", encoding="utf-8") as fh:
                for _, _, line in frames:
                    fh.write(json.dumps(line, separators=(",", ":")) + "\n")
            if rec["snapshot"]:
                (tmp / "snapshot.jpg").write_bytes(rec["snapshot"])
            meta = {
                **data,
                "camera": data.get("camera", self.camera),
                "label": None,
                "privacy": self.privacy,
                "clip": f"clip{ext}" if frames else None,
                "clip_fps": round(fps, 2),
                "frames": len(frames),
                "start_t": frames[0][0] if frames else None,
                "end_t": frames[-1][0] if frames else None,
                "recorded": time.time(),
            }
            (tmp / "event.json").write_text(json.dumps(meta, indent=1))
            os.chmod(tmp, 0o755)
            os.replace(tmp, self.dir / event_id)
            log.info("event record %s kept: %d frames, %.1f s", event_id, len(frames), span)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _need_room(directory: Path, size: int) -> None:
    """OSError (no space left) unless ``size`` bytes and the margin fit on the disk of ``directory``."""
    st = os.statvfs(directory)
    if st.f_bavail * st.f_frsize < size + DISK_MARGIN:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
