"""FrameScheduler: several captures, one consumer; fair round-robin, bounded, drops counted (fake sources)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Optional

import numpy as np
import pytest
from fallwatch.daemon.app.scheduler import FrameScheduler
from fallwatch.daemon.capture.reader import Capture
from fallwatch.daemon.capture.sources import EndOfStream, Source
from waiting import wait_until

END = object()


def image(n: int) -> np.ndarray:
    return np.full((32, 32, 3), n % 256, np.uint8)


class PushSource(Source):
    """A camera whose frames the test hands in one by one (``push``); END ends it."""

    bgr = False

    def __init__(self, name: str):
        self.name = name
        self.queue: queue.Queue = queue.Queue()

    def open(self) -> None:
        pass

    def push(self, n: int = 1) -> None:
        for _ in range(n):
            self.queue.put(image(self.queue.qsize()))

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        item = self.queue.get()
        if item is END:
            raise EndOfStream()
        return item, 0.0


class FloodSource(Source):
    """A camera that always has a new frame: far busier than any consumer."""

    name = "flood"
    bgr = False

    def open(self) -> None:
        pass

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        return image(1), 0.0


class FileLikeSource(Source):
    """A file of ``count`` frames (media time, end of stream)."""

    name = "file"
    is_file = True
    bgr = False
    fps = 10.0

    def __init__(self, count: int):
        self.count, self.index = count, 0

    def open(self) -> None:
        pass

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        if self.index >= self.count:
            raise EndOfStream()
        self.index += 1
        return image(self.index), (self.index - 1) / 10.0


def ready(capture: Capture) -> bool:
    """A frame is waiting in the capture's slot."""
    return capture.delivered - capture.dropped > capture.taken


@pytest.fixture
def captures() -> Iterator[list[Capture]]:
    started: list[Capture] = []
    yield started
    for capture in started:
        if isinstance(capture.source, PushSource):
            capture.source.queue.put(END)
        capture.stop()


def scheduled(
    scheduler: FrameScheduler, started: list[Capture], name: str, source: Source, **options: object
) -> Capture:
    capture = scheduler.add(name, Capture(source, **options))  # type: ignore[arg-type]
    started.append(capture.start())
    return capture


def test_a_busy_camera_does_not_starve_a_quiet_one(captures: list[Capture]) -> None:
    scheduler = FrameScheduler()
    busy = scheduled(scheduler, captures, "busy", FloodSource())
    quiet_source = PushSource("quiet")
    quiet = scheduled(scheduler, captures, "quiet", quiet_source)
    for round_no in range(1, 21):
        quiet_source.push()
        assert wait_until(lambda: quiet.delivered == round_no, 30), quiet.stats()  # noqa: B023
        # Both have a frame ready at every turn: round-robin hands the quiet one out within two turns.
        names = []
        for _ in range(2):
            assert wait_until(lambda: ready(busy), 30), busy.stats()
            got = scheduler.next(10)
            assert got is not None
            names.append(got[0])
        assert "quiet" in names, (round_no, names)
    stats = scheduler.stats()
    assert stats["quiet"]["handed"] == 20 and quiet.dropped == 0
    assert stats["busy"]["handed"] >= 19, "the busy camera is served too"
    assert busy.dropped > 0 and stats["busy"]["dropped"] == busy.dropped, "frames it overwrote are counted"


def test_a_camera_delivering_ten_times_more_gets_its_newest_frame_not_a_backlog(captures: list[Capture]) -> None:
    scheduler = FrameScheduler()
    fast_source, slow_source = PushSource("fast"), PushSource("slow")
    fast = scheduled(scheduler, captures, "fast", fast_source)
    slow = scheduled(scheduler, captures, "slow", slow_source)
    for round_no in range(1, 6):
        fast_source.push(10)
        slow_source.push(1)
        assert wait_until(lambda: fast.delivered == 10 * round_no and slow.delivered == round_no, 30)  # noqa: B023
        got = [scheduler.next(1), scheduler.next(1)]
        assert sorted(name for name, _ in filter(None, got)) == ["fast", "slow"], round_no
        fast_frame = next(frame for name, frame in filter(None, got) if name == "fast")
        assert fast_frame.frame_no == 10 * round_no - 1, "the newest of the ten"
        assert scheduler.next(0) is None, "nothing else was waiting"
    stats = scheduler.stats()
    assert stats["fast"]["handed"] == stats["slow"]["handed"] == 5
    assert stats["fast"]["dropped"] == 45 and stats["slow"]["dropped"] == 0
    assert stats["fast"]["delivered"] == 50


def test_nothing_queues_without_bound(captures: list[Capture]) -> None:
    scheduler = FrameScheduler()
    source = PushSource("cam")
    capture = scheduled(scheduler, captures, "cam", source)
    source.push(500)
    assert wait_until(lambda: capture.delivered == 500, 30), capture.stats()
    got = scheduler.next(1)
    assert got is not None and got[1].frame_no == 499
    assert scheduler.next(0) is None
    assert capture.dropped == 499 and scheduler.stats()["cam"]["handed"] == 1


def test_next_blocks_until_any_camera_signals_and_ends_when_all_have_finished(captures: list[Capture]) -> None:
    scheduler = FrameScheduler()
    a, b = PushSource("a"), PushSource("b")
    scheduled(scheduler, captures, "a", a)
    capture_b = scheduled(scheduler, captures, "b", b)
    assert scheduler.next(0) is None
    pusher = threading.Thread(target=b.push)
    pusher.start()
    got = scheduler.next(30)  # woken by b's signal (a long timeout only costs time when failing)
    pusher.join()
    assert got is not None and got[0] == "b"
    a.queue.put(END)
    b.push()
    b.queue.put(END)
    assert wait_until(lambda: capture_b.ended, 30)
    got = scheduler.next(30)
    assert got is not None and got[0] == "b", "the last frame of an ended camera is still handed out"
    assert wait_until(lambda: scheduler.finished, 30)
    assert scheduler.next(30) is None  # at once: nothing more will come
    with pytest.raises(ValueError, match="already scheduled"):
        scheduler.add("a", Capture(PushSource("again")))


def test_a_file_played_as_fast_as_possible_can_drop_its_oldest_too(captures: list[Capture]) -> None:
    # realtime: false files are lossless by default (the reader waits for every frame to be taken);
    # lossless=False makes one drop its oldest frame like a camera.
    scheduler = FrameScheduler()
    lossy = scheduled(scheduler, captures, "lossy", FileLikeSource(20), realtime=False, lossless=False)
    assert wait_until(lambda: lossy.ended, 30)
    got = scheduler.next(1)
    assert got is not None and got[1].frame_no == 19 and lossy.dropped == 19
    assert scheduler.next(1) is None

    scheduler = FrameScheduler()
    every = scheduled(scheduler, captures, "every", FileLikeSource(20), realtime=False)
    assert every.lossless
    frames = []
    while (got := scheduler.next(10)) is not None:
        frames.append(got[1].frame_no)
    assert frames == list(range(20)) and every.dropped == 0
