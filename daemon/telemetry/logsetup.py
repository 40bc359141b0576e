"""Logging for the daemon: journald when running under systemd, else stderr, at ``log.level``.

Under systemd (JOURNAL_STREAM is set) the native JournalHandler of systemd-python is used when it imports, so
each record keeps its priority and logger name as journal fields. Without systemd-python, stderr still ends in
the journal; lines then carry a ``<N>`` syslog priority prefix, which journald turns into the priority, and no
time stamp, which journald adds itself.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _PriorityPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines() or [""])


def under_journald() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
        dev, ino = stream.split(":")
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return True  # systemd said so; trust it


def _journal_handler() -> Optional[logging.Handler]:
    try:
        from systemd.journal import JournalHandler
    except Exception:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER="fallwatch")


def setup_logging(level: str = "INFO", stream: Optional[TextIO] = None) -> str:
    """Configure the root logger (replacing earlier handlers); returns where logs go: journal or stderr."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    target = "stderr"
    handler: Optional[logging.Handler] = None
    if stream is None and under_journald():
        handler = _journal_handler()
        if handler is not None:
            handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
            target = "journal"
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_PriorityPrefix(JOURNAL_FORMAT))
            target = "journal (stderr)"
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    root.addHandler(handler)
    set_level(level)
    return target


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
