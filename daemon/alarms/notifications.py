"""Notifications without Home Assistant, through Apprise (ntfy, Telegram, Pushover, Signal, Matrix, e-mail, ...).

Each fall, person_down, reminder and resolved becomes one message per configured URL (``notify.urls`` and
``notify.urls_file``), with the snapshot attached when there is one. A message is durable like an MQTT event: it
is committed to a SQLite queue (``notify.sqlite3`` in the state directory) before anything is sent, one row per
URL, so one service that is down never makes another receive a message twice. A sender thread delivers the rows
in order, deletes each once its service took it, and retries a failing one with exponential backoff up to
``notify.retry_max_s``, for as long as it takes; a restart sends what is left. A crash between a service taking a
message and its row being deleted sends that message again after the restart (at-least-once, a window of
milliseconds).

Rows are keyed by a fingerprint of their URL, never the URL itself (it holds tokens); rows for a URL no longer
configured are dropped at start, said in one line.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

from fallwatch.config.loader import redact_url
from fallwatch.config.schema import NotifyConfig

log = logging.getLogger(__name__)
logging.getLogger("apprise").setLevel(logging.WARNING)  # its INFO lines repeat ours; its warnings say why a send failed

FILE_NAME = "notify.sqlite3"
FIRST_RETRY_S = 2.0
MAX_ROWS = 10000  # a service down for weeks must not fill the card: the oldest go first (logged)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    dest     TEXT NOT NULL,
    id       TEXT NOT NULL,
    title    TEXT NOT NULL,
    body     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    image    BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at  REAL NOT NULL,
    created  REAL NOT NULL,
    UNIQUE (dest, id)
);
"""


class NotifyError(Exception):
    """notify.urls_file cannot be read, or holds a URL Apprise cannot use."""


def fingerprint(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def notify_urls(cfg: NotifyConfig) -> list[str]:
    """The configured URLs: ``urls``, then ``urls_file`` (one a line, ``#`` comments). NotifyError names a problem."""
    from apprise import Apprise

    urls = [u.get_secret_value() for u in cfg.urls]
    if cfg.urls_file:
        try:
            text = Path(cfg.urls_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NotifyError(f"notify.urls_file: cannot read {cfg.urls_file}: {exc}") from None
        for n, line in enumerate(text.splitlines(), 1):
            url = line.strip()
            if not url or url.startswith("#"):
                continue
            if Apprise.instantiate(url, suppress_exceptions=True) is None:
                scheme = url.partition("://")[0] or "(none)"
                raise NotifyError(f"notify.urls_file: {cfg.urls_file}:{n}: not an Apprise URL (scheme {scheme})")
            urls.append(url)
    return list(dict.fromkeys(urls))


def describe(url: str) -> str:
    """A URL fit for the log: the scheme and host, no tokens."""
    scheme, _, rest = redact_url(url).partition("://")
    return f"{scheme}://{rest.split('/')[0].rpartition('@')[2]}/..."


# ---- the words -------------------------------------------------------------------------------------------------
KIND_WORDS = {"fall": "Fall", "person_down": "Person down", "test": "Test"}
BY_WORDS = {"ack": "acknowledged by {by}", "false_alarm": "marked a false alarm by {by}"}


def local_time(ts: Any) -> str:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return str(ts)


def message(event: dict) -> tuple[str, str]:
    """(title, body) of an event, in words for a carer."""
    kind, camera = event.get("event"), event.get("camera") or event.get("source") or "camera"
    alarm = KIND_WORDS.get(str(event.get("alarm_kind")), "Alarm").lower()
    when = local_time(event.get("ts"))
    answer = "Answer on the fallwatch page, or in Home Assistant."
    if kind == "fall":
        return f"Fall in {camera}", f"A fall was seen in {camera} at {when}. {answer}"
    if kind == "person_down":
        return f"Person down in {camera}", f"Someone has been on the floor in {camera} since {when}. {answer}"
    if kind == "reminder":
        level = event.get("level")
        return (
            f"Reminder {level}: {alarm} in {camera}",
            f"Nobody has answered the {alarm} in {camera} yet (reminder {level}, {when}). {answer}",
        )
    if kind == "resolved":
        reason = str(event.get("reason"))
        how = BY_WORDS.get(reason, "the person got up again").format(by=event.get("by"))
        return f"Resolved: {alarm} in {camera}", f"The {alarm} in {camera} was {how} at {when}."
    return "fallwatch test", f"A test notification from fallwatch ({camera}, {when}): this is how an alarm arrives."


# ---- sending ---------------------------------------------------------------------------------------------------
def send(url: str, title: str, body: str, image: Optional[bytes], kind: str = "fall") -> bool:
    """One message to one service, now; True when it took it (Apprise logs why not)."""
    from apprise import Apprise, AppriseAttachment, NotifyType
    from apprise.attachment.memory import AttachMemory

    apobj = Apprise()
    if not apobj.add(url):
        return False
    attach = None
    if image:
        attach = AppriseAttachment()
        attach.add(AttachMemory(content=image, name="snapshot.jpg", mimetype="image/jpeg"))
    notify_type = {"resolved": NotifyType.SUCCESS, "test": NotifyType.INFO}.get(kind, NotifyType.FAILURE)
    return bool(apobj.notify(body=body, title=title, notify_type=notify_type, attach=attach))


@dataclass
class Row:
    seq: int
    dest: str
    id: str
    title: str
    body: str
    kind: str
    image: Optional[bytes]
    attempts: int


class Notifications:
    """The durable queue and its sender thread."""

    def __init__(
        self,
        cfg: NotifyConfig,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        sender: Callable[[str, str, str, Optional[bytes], str], bool] = send,
    ):
        self.cfg = cfg
        self.urls = {fingerprint(u): u for u in notify_urls(cfg)}  # NotifyError
        self.path = Path(state_dir) / FILE_NAME
        self._clock = clock
        self._send = sender
        self._lock = threading.Lock()
        self._db = self._open(self.path)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._failing: set[str] = set()  # dests whose last attempt failed: said once, and again when they recover
        self.sent = 0
        self.failed_attempts = 0  # this run's sends a service did not take (each is retried)
        self._forget_unknown()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            return db
        except (OSError, sqlite3.Error) as exc:
            log.error("notify: cannot open %s (%s); queued notifications will not survive a restart", path, exc)
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
            return db

    def _forget_unknown(self) -> None:
        with self._lock:
            rows = self._db.execute("SELECT dest, count(*) FROM notify GROUP BY dest").fetchall()
            gone = {dest: n for dest, n in rows if dest not in self.urls}
            for dest, n in gone.items():
                self._db.execute("DELETE FROM notify WHERE dest = ?", (dest,))
                log.warning("notify: dropped %d queued notification(s) for a URL no longer configured", n)
        queued = len(self)
        if queued:
            log.info("notify: %d notification(s) queued from before; sending them first, in order", queued)

    # -- public ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM notify").fetchone()[0])

    def figures(self) -> dict[str, Any]:
        """For /api/stats, the heartbeat and the page: queued, sent (this run), the services failing now."""
        return {
            "queued": len(self),
            "sent": self.sent,
            "failing": sorted(describe(self.urls[d]) for d in tuple(self._failing)),
        }

    def enqueue(self, event: dict, image: Optional[bytes] = None) -> int:
        """Queue one message per URL for ``event`` (durably: on disk when this returns); how many were queued (an
        event already queued is not queued twice)."""
        if not self.urls:
            return 0
        title, body = message(event)
        image = image if self.cfg.snapshot else None
        now = self._clock()
        queued = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for dest in self.urls:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO notify (dest, id, title, body, kind, image, next_at, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (dest, str(event["id"]), title, body, str(event.get("event")), image, now, now),
                    )
                    queued += cur.rowcount
                excess = self._db.execute("SELECT count(*) FROM notify").fetchone()[0] - MAX_ROWS
                if excess > 0:
                    self._db.execute(
                        "DELETE FROM notify WHERE seq IN (SELECT seq FROM notify ORDER BY seq LIMIT ?)", (excess,)
                    )
                    log.warning("notify: queue full (%d): dropped the %d oldest notification(s)", MAX_ROWS, excess)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                log.error("notify: cannot queue the %s notification %s (%s)", event.get("event"), event["id"], exc)
                return 0
        self._wake.set()
        return queued

    def start(self) -> None:
        if self._thread is not None or not self.urls:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
        self._thread.start()
        log.info("notify: %s", ", ".join(describe(u) for u in self.urls.values()))

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)  # one send in progress may take Apprise's own timeouts
        self._thread = None
        left = len(self)
        if left:
            log.info("notify: stopping with %d notification(s) queued; they are sent on the next start", left)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the sender --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.pump()
            except Exception:
                log.exception("notify: sender failed; retrying")
                wait = 5.0
            self._wake.wait(wait)
            self._wake.clear()

    def pump(self) -> float:
        """Send what is due, each service's messages in the order they were queued (a message waiting for its
        retry holds back the later ones to that service: a "resolved" never arrives before its "fall"); the seconds
        until the next attempt is due."""
        while not self._stop.is_set():
            now = self._clock()
            with self._lock:
                heads = [
                    Row(*r)
                    for r in self._db.execute(
                        "SELECT seq, dest, id, title, body, kind, image, attempts FROM notify "
                        "WHERE seq IN (SELECT min(seq) FROM notify GROUP BY dest) AND next_at <= ? ORDER BY seq",
                        (now,),
                    ).fetchall()
                ]
            if not heads:
                break
            if not any([self._attempt(row) for row in heads]):
                break  # every service due failed: wait for the next attempt
        with self._lock:
            nxt = self._db.execute(
                "SELECT min(next_at) FROM notify WHERE seq IN (SELECT min(seq) FROM notify GROUP BY dest)"
            ).fetchone()[0]
        return 3600.0 if nxt is None else max(0.05, min(3600.0, nxt - self._clock()))

    def _attempt(self, row: Row) -> bool:
        """One message to its service; True when it took it."""
        url = self.urls[row.dest]
        try:
            ok = self._send(url, row.title, row.body, row.image, row.kind)
        except Exception as exc:  # a plugin raising must not stop the queue
            log.debug("notify: %s raised %s", describe(url), exc)
            ok = False
        with self._lock:
            if ok:
                self._db.execute("DELETE FROM notify WHERE seq = ?", (row.seq,))
            else:
                delay = min(self.cfg.retry_max_s, FIRST_RETRY_S * 2**row.attempts)
                self._db.execute(
                    "UPDATE notify SET attempts = attempts + 1, next_at = ? WHERE seq = ?",
                    (self._clock() + delay, row.seq),
                )
        if not ok:
            self.failed_attempts += 1
        if ok:
            self.sent += 1
            if row.dest in self._failing:
                self._failing.discard(row.dest)
                log.warning("notify: %s takes notifications again", describe(url))
            log.info("notify: %s notification %s sent to %s", row.kind, row.id, describe(url))
            return True
        if row.dest not in self._failing:
            self._failing.add(row.dest)
            log.error(
                "notify: %s did not take the %s notification %s; kept and retried with backoff up to %g s",
                describe(url),
                row.kind,
                row.id,
                self.cfg.retry_max_s,
            )
        return False


def send_test(cfg: NotifyConfig, image: Optional[bytes] = None, camera: str = "test") -> list[tuple[str, bool]]:
    """``fallwatch notify --test``: one test message to every URL now; (URL described, taken?) each."""
    from fallwatch.rules.events import utc_now_iso

    title, body = message({"event": "test", "camera": camera, "ts": utc_now_iso()})
    return [(describe(u), send(u, title, body, image, "test")) for u in notify_urls(cfg)]
