"""A folder of event records as the events page, MQTT feedback and `tune` read it: the listing (each record checked
by store.py), labels (kept with the record and in the label index), and pruning to ``events.keep_days`` and
``events.max_mb``. Several cameras' recorders share one folder and one lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional

from fallwatch.config.schema import EventsConfig
from fallwatch.daemon.records.store import (
    ID_RE,
    LABELS,
    POSES_SHARE,
    Listing,
    index_entry,
    keep_pose,
    read_labels,
    read_meta,
    scan_records,
    trim_poses,
    write_labels,
)

log = logging.getLogger(__name__)

_folder_locks: dict[str, threading.Lock] = {}
_folder_locks_guard = threading.Lock()


def _folder_lock(directory: Path) -> threading.Lock:
    """One lock per records folder: with several cameras each has its recorder, and one's pruning must not
    remove a record while another's label is being written to it."""
    key = os.path.abspath(directory)
    with _folder_locks_guard:
        return _folder_locks.setdefault(key, threading.Lock())


class RecordFolder:
    """The records in ``directory``; EventRecorder writes into one."""

    def __init__(self, cfg: EventsConfig, directory: Path):
        self.cfg = cfg
        self.dir = Path(directory)
        self._lock = _folder_lock(directory)  # labels and pruning; shared by the cameras' recorders of one folder

    def record_dir(self, event_id: str) -> Optional[Path]:
        """The folder of a valid record (a damaged one is skipped here as in the listing)."""
        if not isinstance(event_id, str) or not ID_RE.match(event_id):
            return None
        path = self.dir / event_id
        try:
            read_meta(path)
        except (OSError, ValueError):
            return None
        return path

    def listing(self) -> Listing:
        """The valid records, newest first, and the skipped ones with the reason."""
        return scan_records(self.dir)

    def label(self, event_id: Any, label: Any) -> None:
        """Store a user's label with the record and in the label index; ValueError (with the reason) changes
        nothing."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        path = self.record_dir(event_id) if isinstance(event_id, str) else None
        if path is None:
            raise ValueError(f"no event record with id {event_id!r}")
        with self._lock:
            meta = read_meta(path)
            meta["label"] = label
            meta["labelled"] = time.time()
            index = read_labels(self.dir)
            index[event_id] = index_entry(meta, label, meta["labelled"])
            write_labels(self.dir, index)
            tmp = path / "event.json.tmp"
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, path / "event.json")
        log.info("event %s labelled %s", event_id, label)

    def labels(self) -> dict[str, dict]:
        """Every label given, kept records and pruned ones: the index, plus the labels of records written
        before the index existed."""
        with self._lock:
            return self._labels(self.listing().records)

    def _labels(self, records: list[dict]) -> dict[str, dict]:
        index = read_labels(self.dir)
        for meta in records:
            if meta.get("label") in LABELS and meta["id"] not in index:
                index[meta["id"]] = index_entry(meta, meta["label"], meta.get("labelled", meta["recorded"]))
        return index

    def label_counts(self) -> dict[str, int]:
        counts = {label: 0 for label in LABELS}
        for entry in self.labels().values():
            counts[entry["label"]] += 1
        return counts

    def prune(self) -> None:
        """Unlabelled records older than keep_days go; then, over max_mb, the oldest records, labelled or not (a
        flood of labels must not make room for nothing but new records). A pruned record's label stays in the
        index, and its pose recording among the kept ones (at most a tenth of max_mb, oldest out first)."""
        with self._lock:
            records = sorted(self.listing().records, key=lambda m: m["recorded"])
            now = time.time()
            sizes = {m["id"]: _size(self.dir / m["id"]) for m in records}
            poses_max = POSES_SHARE * self.cfg.max_mb * 1e6
            total = sum(sizes.values()) + trim_poses(self.dir, poses_max)
            for meta in records:
                too_old = not meta.get("label") and now - meta["recorded"] > self.cfg.keep_days * 86400
                if not (too_old or total > self.cfg.max_mb * 1e6):
                    continue
                kept = 0
                if meta.get("label") in LABELS:
                    self._keep_label(meta)
                    kept = keep_pose(self.dir, meta["id"])
                shutil.rmtree(self.dir / meta["id"], ignore_errors=True)
                total -= sizes[meta["id"]] - kept
                log.info(
                    "event record %s deleted (%s)",
                    meta["id"],
                    "older than events.keep_days" if too_old else "over events.max_mb",
                )
            trim_poses(self.dir, poses_max)
            # Leftovers of a write cut short (power loss): never a record, always garbage.
            for partial in self.dir.glob(".*.*"):
                if partial.is_dir() and now - partial.stat().st_mtime > 600:
                    shutil.rmtree(partial, ignore_errors=True)

    def _keep_label(self, meta: dict) -> None:
        """Make sure the index has the label of a record about to go (one labelled before the index existed)."""
        index = read_labels(self.dir)
        if meta["id"] not in index:
            index[meta["id"]] = index_entry(meta, meta["label"], meta.get("labelled", meta["recorded"]))
            write_labels(self.dir, index)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0
