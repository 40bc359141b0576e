"""Heavy work asked for by the debug page (a record's signal plot, a clip's first conversion) runs here: in a child
process at the lowest CPU priority (nice 19), one job at a time, so viewers cost the pipeline neither a core it
needs nor the GIL. Each job runs in a fresh process (spawned, so nothing of the daemon's threads is copied), which
exits when the job is done: nothing stays in memory between views. Callers cache the results.

Jobs waiting for the worker are bounded (MAX_PENDING): beyond, ``Busy``. The same job asked for again while it
runs (five viewers opening one clip) waits for the one already under way, and once done its result is kept (the
last CACHED results, by key: the key must name everything the result depends on).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Hashable, Optional

MAX_PENDING = 8  # jobs queued or running
CACHED = 32  # results kept (a signal plot is a few tens of kB)
NICE = 19


class Busy(RuntimeError):
    """Too many heavy jobs are waiting already, or this one takes long: try again later."""


def _lowest_priority() -> None:
    os.nice(NICE)


class Offload:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # a future already done runs its callback at once, under the lock
        self._pool: Optional[ProcessPoolExecutor] = None
        self._running: dict[Hashable, Future] = {}
        self._results: OrderedDict[Hashable, Any] = OrderedDict()
        self.jobs = 0  # jobs started, for tests and curiosity

    def _executor(self) -> ProcessPoolExecutor:
        """(under self._lock)"""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lowest_priority,
                max_tasks_per_child=1,
            )
        return self._pool

    def run(self, key: Hashable, fn: Callable[..., Any], *args: Any, timeout: float = 300) -> Any:
        """``fn(*args)`` in the worker process; its result, or its exception raised here. ``key`` names the job:
        a caller asking for a job already under way waits for that one."""
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
            future = self._running.get(key)
            if future is None:
                if len(self._running) >= MAX_PENDING:
                    raise Busy(f"{MAX_PENDING} heavy jobs (clip conversions, signal plots) are waiting already")
                try:
                    future = self._executor().submit(fn, *args)
                except BrokenProcessPool:  # a worker was killed (out of memory): start afresh
                    self._pool = None
                    future = self._executor().submit(fn, *args)
                self._running[key] = future
                self.jobs += 1
                future.add_done_callback(functools.partial(self._done, key))
        try:
            return future.result(timeout)
        except TimeoutError:  # (the job goes on, and its result is kept for the next ask)
            raise Busy(f"still at it after {timeout:g} s") from None

    def _done(self, key: Hashable, future: Future) -> None:
        with self._lock:
            if self._running.get(key) is future:
                del self._running[key]
            if future.cancelled():
                return
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                self._pool = None
            elif error is None:
                self._results[key] = future.result()
                while len(self._results) > CACHED:
                    self._results.popitem(last=False)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
