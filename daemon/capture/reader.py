"""Camera capture: read a Source (capture/sources.py) in a thread, keep only the newest frame.

Frames leave as RGB uint8 arrays, rotated and flipped as configured.

Why a thread with a one-frame slot: a camera runs at its own pace; when inference is slower, the frame it would
process next must be the newest one (latency stays at one inference time), so older frames are overwritten and
counted as dropped instead of queueing without bound. Video files played as fast as possible (``realtime:
false``) are the exception: there every frame is wanted, so the reader waits for the consumer instead.

Time stamps: ``t`` is media time for files and folders (frame index / fps, continuing across loops) and capture
time (``time.monotonic()``) for cameras; the rules only ever compare ``t`` values with each other.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Optional

import numpy as np
from fallwatch.daemon.capture.sources import EndOfStream, Source, SourceError, make_source

log = logging.getLogger(__name__)

MIN_FRAME_SIDE = 16
FAILED_READS_BEFORE_REOPEN = 3
PACE_JUMP_S = 5.0  # realtime files: a frame due further ahead than this is a jump in the time stamps, not a wait


class CaptureState(StrEnum):
    """Where a capture is; the value is what /api/stats, heartbeats and /metrics show (``camera``)."""

    STARTING = "starting"
    RUNNING = "running"
    REOPENING = "reopening"  # lost the camera or stream; trying again with backoff
    EOF = "eof"  # a file (or a source that ends) has no more frames
    STOPPED = "stopped"  # stopped by the daemon
    FAILED = "failed"  # cannot be used: one error line says why (``error``)


ENDED = (CaptureState.EOF, CaptureState.STOPPED, CaptureState.FAILED)


@dataclass
class Frame:
    image: np.ndarray  # RGB uint8, H x W x 3 (in the slot: as the source read it, until get() converts it)
    t: float  # seconds: media time (files) or monotonic capture time (cameras)
    frame_no: int  # source frame number (counts dropped frames too)
    captured: float  # time.monotonic() when the frame was read


def is_frame(image: Any) -> bool:
    """A usable frame: uint8, H x W x 3 or 4 (or greyscale H x W), neither side under MIN_FRAME_SIDE."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return False
    if image.ndim == 2:  # greyscale (IR) cameras
        return min(image.shape) >= MIN_FRAME_SIDE
    return image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= MIN_FRAME_SIDE


def rgb_of(image: np.ndarray, bgr: bool) -> np.ndarray:
    """A usable frame (``is_frame``) as contiguous RGB uint8, H x W x 3."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1] if bgr else image)


def transform(image: np.ndarray, rotate: int, flip: str) -> np.ndarray:
    """Mirror first (it corrects the sensor), then rotate clockwise (it corrects the mounting)."""
    if flip in ("horizontal", "both"):
        image = image[:, ::-1]
    if flip in ("vertical", "both"):
        image = image[::-1]
    if rotate:
        image = np.rot90(image, k=-(rotate // 90))  # negative k: clockwise
    return np.ascontiguousarray(image) if (rotate or flip != "none") else image


class Capture:
    """Reads ``source`` in its own thread; ``get()`` returns the newest frame not yet taken.

    ``lossless``: the reader waits for the slot to empty instead of overwriting it (default: files played as fast
    as possible, ``realtime: false``); False makes any source drop its oldest frame. ``on_update`` is called from
    the capture thread, after the frame is in the slot and no lock is held, for every new frame and once when
    the source ends: a consumer of several captures (scheduler.FrameScheduler) waits on that, not on each one.
    """

    def __init__(
        self,
        source: Source,
        rotate: int = 0,
        flip: str = "none",
        realtime: bool = True,
        loop: bool = False,
        reopen_max_s: float = 30.0,
        reopen_min_s: float = 0.5,
        lossless: Optional[bool] = None,
        on_update: Optional[Callable[[], None]] = None,
    ):
        self.source = source
        self.rotate, self.flip = rotate, flip
        self.realtime, self.loop = realtime, loop
        self.reopen_min_s, self.reopen_max_s = reopen_min_s, max(reopen_min_s, reopen_max_s)
        self.lossless = source.is_file and not realtime if lossless is None else lossless
        self.on_update = on_update
        self._cond = threading.Condition()
        self._slot: Optional[Frame] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.state = CaptureState.STARTING
        self.error: Optional[str] = None
        self.delivered = 0  # frames read and put in the slot
        self.taken = 0
        self.dropped = 0  # frames overwritten before inference took them
        self.corrupt = 0  # unreadable or malformed frames, skipped
        self.reopens = 0  # failed open/read attempts followed by a retry
        self.last_progress = time.monotonic()  # the thread is alive (read returned, or waiting to retry)
        self._opened = False
        self._frame_no = 0

    # -- consumer side ---------------------------------------------------------------------------------------
    def start(self) -> "Capture":
        """Open files now (a bad file is a SourceError for the caller); cameras open in the thread, with retry."""
        if self.source.is_file:
            self.source.open()
            self._opened = True
            self.state = CaptureState.RUNNING
            log.info("source: %s", self.source.describe())
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        return self

    def fail(self, error: str) -> None:
        """This source cannot be used at all (with several cameras the others go on): said in one line, the
        capture ends as failed without reading."""
        log.error("%s", error)
        self.error = error
        self.state = CaptureState.FAILED
        self._updated()

    def get(self, timeout: float = 0.5) -> Optional[Frame]:
        """The newest frame, or None after ``timeout`` (or at once when the source has ended)."""
        with self._cond:
            if self._slot is None and not self.ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            if frame is None:
                return None
            self.taken += 1
            self._cond.notify_all()  # a lossless reader waits for the slot to empty
        # Converted here, in the taker's thread, not when read: a frame overwritten unseen costs only its read.
        image = transform(rgb_of(frame.image, self.source.bgr), self.rotate, self.flip)
        return dataclasses.replace(frame, image=image)

    @property
    def ended(self) -> bool:
        """The source will deliver nothing more (EOF without loop, a fatal error, or stop())."""
        return self.state in ENDED

    @property
    def finished(self) -> bool:
        """Ended and the last frame has been taken."""
        with self._cond:
            return self.ended and self._slot is None

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            # A camera driver can block in read(); the thread is a daemon, so do not wait for it forever.
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread still blocked in the source after %.1fs; leaving it", timeout)
        if not self.ended:
            self.state = CaptureState.STOPPED
        if self._thread is None or not self._thread.is_alive():
            self._close()
        self._updated()

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "state": self.state,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "corrupt": self.corrupt,
            "reopens": self.reopens,
            "source_fps": self.source.fps,
            "error": self.error,
        }

    # -- capture thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.reopen_min_s
        failed_reads = 0
        bad_run = False  # the last frame read was malformed
        pace_start: Optional[tuple[float, float]] = None  # (monotonic, t) of the first paced frame
        try:
            while not self._stop.is_set():
                self.last_progress = time.monotonic()
                if not self._opened:
                    try:
                        self.source.open()
                    except SourceError as exc:  # will not get better by retrying
                        self.error = str(exc)
                        self.state = CaptureState.FAILED
                        log.error("%s", exc)
                        break
                    except Exception as exc:
                        self.reopens += 1
                        self.error = f"{exc}"
                        self.state = CaptureState.REOPENING
                        log.warning(
                            "camera %s unavailable: %s; retrying in %gs (attempt %d)",
                            self.source.name,
                            exc,
                            round(backoff, 3),
                            self.reopens,
                        )
                        self._sleep(backoff)
                        backoff = min(backoff * 2, self.reopen_max_s)
                        continue
                    self._opened = True
                    failed_reads = 0
                    self.state = CaptureState.RUNNING
                    self.error = None
                    log.info("source: %s opened", self.source.describe())
                try:
                    got = self.source.read()
                except EndOfStream:
                    if self.loop:
                        try:
                            self.source.rewind()
                        except EndOfStream:
                            self.state = CaptureState.EOF
                            break
                        except SourceError as exc:  # the file went away or changed under us
                            self.error = str(exc)
                            self.state = CaptureState.FAILED
                            log.error("%s", exc)
                            break
                        log.info("%s: end of file, looping", self.source.name)
                        continue
                    self.state = CaptureState.EOF
                    log.info("%s: end of source after %d frames", self.source.name, self._frame_no)
                    break
                except SourceError as exc:  # a file with no decodable frame
                    self.error = str(exc)
                    self.state = CaptureState.FAILED
                    log.error("%s", exc)
                    break
                except Exception as exc:  # a camera driver error: treat like a failed read
                    log.warning("camera %s read error: %s", self.source.name, exc)
                    got = None
                if got is None:
                    if self.source.is_file:
                        self.corrupt += 1  # an undecodable image in a folder
                        self._frame_no += 1
                        continue
                    failed_reads += 1
                    if failed_reads >= FAILED_READS_BEFORE_REOPEN:
                        self.reopens += 1
                        self.state = CaptureState.REOPENING
                        self.error = "no frames"
                        log.warning(
                            "camera %s stopped delivering frames; reopening in %gs", self.source.name, round(backoff, 3)
                        )
                        self._close()
                        self._sleep(backoff)
                        backoff = min(backoff * 2, self.reopen_max_s)
                    continue
                failed_reads = 0
                backoff = self.reopen_min_s
                image, t = got
                frame_no = self._frame_no
                self._frame_no += 1
                if not is_frame(image):
                    self.corrupt += 1
                    what = getattr(image, "shape", type(image).__name__)
                    self.error = f"malformed frames ({what})"
                    if not bad_run:  # once per run of bad frames: a camera in a wrong mode sends only these
                        log.warning(
                            "%s: frame %d is malformed (%s); skipping such frames", self.source.name, frame_no, what
                        )
                        bad_run = True
                    continue
                if bad_run:
                    bad_run = False
                    self.error = None
                if self.source.is_file and self.realtime:
                    now = time.monotonic()
                    if pace_start is None:
                        pace_start = (now, t)
                    due = pace_start[0] + (t - pace_start[1])
                    if due - now > PACE_JUMP_S:
                        pace_start = (now, t)  # the time stamps jump ahead (joined recordings): play on
                    elif due > now:
                        self._sleep(due - now)
                    elif now - due > 1.0:
                        pace_start = (now, t)  # fell far behind (slow decode): do not race to catch up
                self._put(Frame(image, float(t), frame_no, time.monotonic()))  # as read: get() converts it
        except Exception:
            log.exception("capture thread failed")
            self.error = "capture thread failed"
            self.state = CaptureState.FAILED
        finally:
            if self._stop.is_set() and not self.ended:
                self.state = CaptureState.STOPPED
            with self._cond:
                self._cond.notify_all()
            self._updated()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.lossless:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.2)
                    self.last_progress = time.monotonic()
            elif self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self.delivered += 1
            self._cond.notify_all()
        self._updated()

    def _updated(self) -> None:
        if self.on_update is not None:
            try:
                self.on_update()
            except Exception:  # a consumer's bug must not end the capture thread
                log.exception("capture on_update callback failed")

    def _sleep(self, seconds: float) -> None:
        """Interruptible by stop(); keeps last_progress fresh so a waiting thread is not taken for a hung one."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            self._stop.wait(min(left, 0.5))
            self.last_progress = time.monotonic()

    def _close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                self.source.close()
            except Exception as exc:
                log.debug("closing %s: %s", self.source.name, exc)


def capture_for(camera: Any, source: Source) -> Capture:
    """The (not yet started) Capture of ``source`` with the camera's settings (config.schema.CameraSettings)."""
    return Capture(
        source,
        rotate=camera.rotate,
        flip=camera.flip,
        realtime=camera.realtime,
        loop=camera.loop,
        reopen_max_s=camera.reopen_max_s,
    )


def open_capture(camera: Any, source: Optional[str] = None) -> Capture:
    """A started Capture for the camera configuration (``camera`` is config.schema.CameraConfig)."""
    return capture_for(camera, make_source(camera, source)).start()
