"""The daemon's persistent state, one SQLite file in WAL mode: a durable, bounded, ordered event outbox, and the
few values the daemon remembers across restarts (``remember``/``recall``: the alerts switch and when a pause
began, the Home Assistant discovery and state topics last published, the count of dropped events). One file and
one lock, so a read-only or damaged disk is handled once for all of it.

An event is committed here *before* it is handed to the MQTT client and deleted only once the broker has
acknowledged it, so a broker outage, a daemon restart (or a power cut) loses nothing. Rows keep their insertion
order (``seq``), so delivery after an outage is in the order the events happened. The table is bounded: when it
is full the oldest rows are dropped and counted (the count survives restarts, it is reported in heartbeats).

A file that can only be read (the SD card's file system went read-only, a common failure) is opened read-only:
the events it holds are still sent, but cannot be deleted once delivered, so they are sent again after the next
restart (at-least-once; consumers dedupe by ``id``). New events then go out without being stored.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Union
from urllib.parse import quote

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def default_state_dir(state_dir: Optional[str] = None) -> Path:
    """``state_dir`` if given, else systemd's $STATE_DIRECTORY (first entry), else ~/.local/state/fallwatch."""
    if state_dir:
        return Path(state_dir).expanduser()
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path.home() / ".local" / "state" / "fallwatch"


def connect_sqlite(path: str) -> sqlite3.Connection:
    """The outbox's database connection (the default of Outbox's ``connect``)."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)


class _Damaged(sqlite3.DatabaseError):
    """PRAGMA quick_check found problems it reports as rows rather than raising."""


class Outbox:
    """The event outbox and the daemon's small key/value store. Thread-safe; every method is one short transaction."""

    def __init__(
        self,
        path: Union[str, Path],
        max_items: int,
        connect: Callable[[str], sqlite3.Connection] = connect_sqlite,
    ):
        """``connect``: opens the database (a seam for tests that break the disk under a working outbox)."""
        if max_items < 1:
            raise ValueError(f"outbox max_items must be at least 1, got {max_items}")
        self.max_items = max_items
        self.path = str(path)
        self.read_only = False
        self._lock = threading.Lock()
        self._connect_db = connect
        self._db = self._open(self.path)

    def _connect(self, path: str) -> sqlite3.Connection:
        db = self._connect_db(path)
        if path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event survives a power cut, not just a crash; events are rare, the cost is nothing.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        # Reads every page (milliseconds for a full outbox): damage is found now, not by the sender on every read.
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            db.close()
            raise _Damaged(f"quick_check: {problems[0]}")
        return db

    def _open(self, path: str) -> sqlite3.Connection:
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error(
                    "outbox: cannot create %s (%s); queued events will not survive a restart", Path(path).parent, exc
                )
                return self._connect(":memory:")
        try:
            return self._connect(path)
        except sqlite3.DatabaseError as exc:
            damaged = isinstance(exc, _Damaged) or getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_CORRUPT,
                sqlite3.SQLITE_NOTADB,
            )
            if path == ":memory:" or not damaged or not Path(path).is_file():
                # permissions, a read-only or full disk, I/O: the file (and the events queued in it) stays where it is
                readable = self._open_read_only(path, exc) if path != ":memory:" and Path(path).is_file() else None
                if readable is not None:
                    return readable
                log.error("outbox: cannot open %s (%s); queued events will not survive a restart", path, exc)
                return self._connect(":memory:")
            # A damaged file must not stop fall alerts: keep it aside for inspection and start afresh.
            aside = f"{path}.corrupt-{int(time.time())}"
            try:
                os.replace(path, aside)
                for suffix in ("-wal", "-shm"):
                    if Path(path + suffix).exists():
                        os.replace(path + suffix, aside + suffix)
            except OSError as move_exc:
                log.error(
                    "outbox: %s is not a usable SQLite database (%s) and cannot be moved aside (%s); "
                    "queued events will not survive a restart",
                    path,
                    exc,
                    move_exc,
                )
                return self._connect(":memory:")
            log.error(
                "outbox: %s is not a usable SQLite database (%s); moved it to %s and started a new one",
                path,
                exc,
                aside,
            )
            try:
                return self._connect(path)
            except sqlite3.DatabaseError as exc2:
                log.error("outbox: cannot create %s (%s); queued events will not survive a restart", path, exc2)
                return self._connect(":memory:")

    def _open_read_only(self, path: str, exc: Exception) -> Optional[sqlite3.Connection]:
        """The file as it is, read-only, so the events queued in it before a restart still go out."""
        for mode in ("mode=ro", "immutable=1"):  # immutable: a WAL file whose -shm cannot be created
            try:
                db = sqlite3.connect(
                    f"file:{quote(path)}?{mode}", uri=True, check_same_thread=False, isolation_level=None, timeout=10
                )
                queued = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
                db.execute("SELECT count(*) FROM meta").fetchone()
            except sqlite3.Error:
                continue
            self.read_only = True
            log.error(
                "outbox: %s can only be read (%s): its %d queued event(s) are sent, but cannot be deleted "
                "once delivered, so they are sent again after the next restart (at-least-once); new events "
                "are sent without being stored",
                path,
                exc,
                queued,
            )
            return db
        return None

    def put(self, event_id: str, payload: bytes) -> tuple[Optional[int], int]:
        """Store one event; returns (seq, number of oldest rows dropped to stay within the bound).

        seq is None when an event with this id is already queued (a retry by the caller is not a second event).
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT OR IGNORE INTO outbox (id, payload, created) VALUES (?, ?, ?)",
                    (event_id, payload, time.time()),
                )
                seq = cur.lastrowid if cur.rowcount else None
                dropped = 0
                excess = db.execute("SELECT count(*) FROM outbox").fetchone()[0] - self.max_items
                if excess > 0:
                    dropped = self._drop_oldest(excess)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite has already rolled back after e.g. SQLITE_FULL
                    db.execute("ROLLBACK")
                raise
        return seq, dropped

    def _drop_oldest(self, n: int) -> int:
        """Inside a transaction: delete the n oldest rows and add them to the persistent drop count."""
        db = self._db
        db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (n,))
        total = int(self._get_meta("dropped") or 0) + n
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dropped', ?)", (str(total),))
        return n

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` rows with seq greater than ``seq``, oldest first: (seq, id, payload)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [(s, i, bytes(p)) for s, i, p in rows]

    def remove(self, seq: int) -> bool:
        """Delete an acknowledged row; False when it was already gone (e.g. dropped by the bound)."""
        with self._lock:
            return self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount > 0

    def set_max(self, max_items: int) -> int:
        """Change the bound (SIGHUP); returns the number of oldest rows dropped to fit."""
        if max_items < 1:
            raise ValueError(f"outbox max_items must be at least 1, got {max_items}")
        with self._lock:
            self.max_items = max_items
            excess = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0] - max_items
            if excess <= 0:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._drop_oldest(excess)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            return dropped

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    @property
    def dropped(self) -> int:
        """Events ever dropped because the outbox was full (persists across restarts)."""
        with self._lock:
            return int(self._get_meta("dropped") or 0)

    def _get_meta(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def recall(self, key: str) -> Optional[str]:
        """A value kept by ``remember`` (in this or an earlier run), None if there is none."""
        with self._lock:
            return self._get_meta(key)

    def remember(self, key: str, value: str) -> None:
        """Keep a small value across restarts; raises sqlite3.Error when the disk refuses."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()
