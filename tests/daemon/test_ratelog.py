"""LogLimiter: a burst of lines per key and window, then a count; flush() tells the count of a flood that stopped."""

from __future__ import annotations

import logging

from fallwatch.daemon.telemetry.ratelog import MAX_KEYS, LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_a_burst_and_a_count(caplog):
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("ratelog-test"), every_s=60, burst=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="ratelog-test"):
        logged = [limiter.warning("bad", "bad command %d", n) for n in range(10000)]
        assert sum(logged) == 3 and logged[:3] == [True] * 3
        assert limiter.warning("other", "another kind") is True  # keys are counted apart
        clock.now += 61
        assert limiter.warning("bad", "bad command %d", 10000) is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:4] == ["bad command 0", "bad command 1", "bad command 2", "another kind"]
    assert lines[4] == "bad command 10000 (+9997 more like this in the last 61 s)"
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_flush_tells_the_count_once_the_window_is_over(caplog):
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("ratelog-test"), every_s=10, burst=1, clock=clock)
    with caplog.at_level(logging.INFO, logger="ratelog-test"):
        limiter.warning("bad", "first")
        limiter.error("bad", "second")
        limiter.warning("bad", "third")
        limiter.flush()  # the window is not over: nothing yet
        assert [r.getMessage() for r in caplog.records] == ["first"]
        clock.now += 10
        limiter.flush()
        limiter.flush()  # told once
    assert [r.getMessage() for r in caplog.records] == ["first", "bad: 2 more like this in the last 10 s (not logged)"]
    assert caplog.records[-1].levelno == logging.ERROR  # the worst of what was held back


def test_keys_are_bounded():
    limiter = LogLimiter(logging.getLogger("ratelog-test"), clock=Clock())
    for n in range(MAX_KEYS * 3):
        limiter.warning(f"key {n}", "line")
    assert limiter.keys_watched == MAX_KEYS
