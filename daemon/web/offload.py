"""Heavy work asked for by the debug page (a record's signal plot, a clip's first conversion) runs here: in a child
process at low CPU priority (nice 10, as the recorder's own threads), one job at a time, so viewers cost the
pipeline no core it needs and no GIL. Each job runs in a fresh process (spawned, so nothing of the daemon's
threads is copied) that ends with the job: nothing stays in memory between views, and a job past its time is
killed.

Jobs waiting or running are bounded (MAX_PENDING): beyond, ``Busy``. The same job asked for again while it runs
(five viewers opening one clip) waits for the one already under way, and once done its result is kept (the last
CACHED results, by key: the key must name everything the result depends on) unless the caller keeps it elsewhere
(a converted clip is kept on disk: ``keep=False``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any, Callable, Hashable, Optional

MAX_PENDING = 8  # jobs waiting or running
CACHED = 32  # results kept (a signal plot is a few tens of kB)
NICE = 10  # 19 starved a first-view conversion for minutes on a busy machine; 10 still yields ~90 % to the pipeline
_SPAWN = multiprocessing.get_context("spawn")


class Busy(RuntimeError):
    """Too many heavy jobs are waiting already, or this one took too long: try again later."""


def _child(conn: Connection, fn: Callable[..., Any], args: tuple) -> None:
    os.nice(NICE)
    try:
        answer = (True, fn(*args))
    except BaseException as exc:  # handed to the caller, raised there
        answer = (False, exc)
    conn.send(answer)
    conn.close()


class Offload:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._running: dict[Hashable, Future] = {}
        self._results: OrderedDict[Hashable, Any] = OrderedDict()
        self._proc: Optional[Any] = None  # the worker process of the job running now
        self._stopped = False
        self.jobs = 0  # jobs started, for tests and curiosity

    def run(self, key: Hashable, fn: Callable[..., Any], *args: Any, keep: bool = True, timeout: float = 600) -> Any:
        """``fn(*args)`` in a worker process (``fn`` importable by name); its result, or its exception raised here.
        ``key`` names the job: a caller asking for a job already under way waits for that one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
            future = self._running.get(key)
            mine = future is None
            if future is None:
                if len(self._running) >= MAX_PENDING:
                    raise Busy(f"{MAX_PENDING} heavy jobs (clip conversions, signal plots) are waiting already")
                future = self._running[key] = Future()
                self.jobs += 1
        if mine:
            try:
                result = self._in_child(fn, args, deadline)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                del self._running[key]
                if keep and future.exception() is None:
                    self._results[key] = result
                    while len(self._results) > CACHED:
                        self._results.popitem(last=False)
        try:
            return future.result(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise Busy(f"still at it after {timeout:g} s") from None

    def _in_child(self, fn: Callable[..., Any], args: tuple, deadline: float) -> Any:
        if not self._one_at_a_time.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Busy("the jobs before it took too long")
        try:
            receive, send = _SPAWN.Pipe(duplex=False)
            proc = _SPAWN.Process(target=_child, args=(send, fn, args), name="fallwatch-offload", daemon=True)
            with self._lock:
                if self._stopped:
                    raise Busy("the server is stopping")
                proc.start()
                self._proc = proc
            send.close()
            try:
                if not receive.poll(max(0.0, deadline - time.monotonic())):
                    raise Busy("took too long; stopped")
                ok, value = receive.recv()
            except EOFError:
                raise RuntimeError(f"the worker process ended without an answer (exit code {proc.exitcode})") from None
            finally:
                if proc.is_alive():
                    proc.kill()
                proc.join()
                receive.close()
                with self._lock:
                    self._proc = None
        finally:
            self._one_at_a_time.release()
        if ok:
            return value
        raise value

    def shutdown(self) -> None:
        """Kill the job running now, if any; no new one starts."""
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.is_alive():
                self._proc.kill()
