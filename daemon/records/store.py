"""Reading the event records back: every `event.json` is checked before it is used, and the users' labels are
kept in a small index beside the records.

A record folder is data, not trust: a hand-edited, damaged or foreign `event.json` (``"recorded": null``,
``"t": "soon"``) is skipped with one warning naming the file and the field, and listed in ``Listing.skipped`` so
the events page and `tune` can say what they left out. Nothing here raises for a bad file.

The label index (``labels.json``) holds each labelled record's label and the few fields `tune` and the counts
need. Labelled records are pruned like the others (oldest first, over ``events.max_mb``); their labels stay in
the index and their pose recordings (a few dozen kB, where the clip is MBs) in ``labelled-poses/``, up to a tenth
of ``events.max_mb``, so `tune` still learns from them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

log = logging.getLogger(__name__)

LABELS = ("fall", "false_alarm")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")  # event ids are uuid4s; nothing that could be a path
INDEX = "labels.json"
POSES = "labelled-poses"  # <id>.jsonl: the pose recordings of pruned labelled records
POSES_SHARE = 0.1  # of events.max_mb
MAX_EVENT_JSON = 1_000_000  # a record's event.json is about 1 kB; a bigger one is not ours
_WARNED_MAX = 1000  # files already warned about (one warning per file and version, not one per listing)


def _seconds(**kw: Any) -> Any:
    """A finite number (an int will do, a string or a bool will not)."""
    return Field(strict=True, allow_inf_nan=False, **kw)


class RecordMeta(BaseModel):
    """The fields of `event.json` the daemon, the page and `tune` compute with; others pass through unchecked
    (they are only shown)."""

    model_config = ConfigDict(extra="allow")

    id: StrictStr = Field(pattern=ID_RE.pattern)
    event: StrictStr
    t: float = _seconds()
    recorded: float = _seconds()
    label: Optional[Literal["fall", "false_alarm"]] = None
    camera: Optional[StrictStr] = None
    clip: Optional[StrictStr] = None
    track: Optional[StrictInt] = None
    frames: StrictInt = Field(default=0, ge=0)
    start_t: Optional[float] = _seconds(default=None)
    end_t: Optional[float] = _seconds(default=None)


@dataclass
class Listing:
    """The valid records (their event JSON, newest first) and the ones left out: ``{"id", "problem"}``."""

    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


_warned: dict[str, int] = {}


def _warn_once(path: Path, problem: str) -> None:
    try:
        version = path.stat().st_mtime_ns
    except OSError:
        version = 0
    key = str(path)
    if _warned.get(key) == version:
        return
    if len(_warned) >= _WARNED_MAX:
        _warned.clear()
    _warned[key] = version
    log.warning("event record %s skipped: %s", path, problem)


def _problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "the file"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {re.sub(r'^Input should be', 'must be', err['msg'])}{more}"


def read_meta(folder: Path) -> dict:
    """The checked event JSON of one record folder; ValueError naming the field when it cannot be used, OSError
    when it cannot be read."""
    path = folder / "event.json"
    with path.open("rb") as fh:
        raw = fh.read(MAX_EVENT_JSON + 1)
    if len(raw) > MAX_EVENT_JSON:
        raise ValueError(f"larger than {MAX_EVENT_JSON} bytes")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        RecordMeta.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_problem(exc)) from None
    if data["id"] != folder.name:
        raise ValueError(f"id: {data['id']!r} is not the folder's name")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def scan_records(directory: Path, warn: bool = True) -> Listing:
    """Every record under ``directory``: the valid ones newest first, and what was skipped and why (each skipped
    file is logged once, unless ``warn`` is false: the caller says it itself)."""
    listing = Listing()
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return listing
    for entry in entries:
        # hidden folders are records being written; a folder without event.json is not a record at all
        if entry.name.startswith(".") or not ID_RE.match(entry.name) or not (entry / "event.json").is_file():
            continue
        try:
            listing.records.append(read_meta(entry))
        except (OSError, ValueError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if warn:
                _warn_once(entry / "event.json", problem)
            listing.skipped.append({"id": entry.name, "problem": problem})
    listing.records.sort(key=lambda m: m["recorded"], reverse=True)
    listing.skipped.sort(key=lambda s: s["id"])
    return listing


# -- the label index -----------------------------------------------------------------------------------------------
def read_labels(directory: Path) -> dict[str, dict]:
    """id -> {"label", "labelled", "event", "camera", "t", "recorded"} of every labelled record, pruned or not.
    A damaged index is warned about and read as empty (the records' own event.json still carry their labels)."""
    path = Path(directory) / INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        _warn_once(path, f"unreadable label index ({exc})")
        return {}
    if not isinstance(data, dict):
        _warn_once(path, "the label index is not a JSON object")
        return {}
    return {k: v for k, v in data.items() if ID_RE.match(k) and isinstance(v, dict) and v.get("label") in LABELS}


def write_labels(directory: Path, labels: dict[str, dict]) -> None:
    """Replace the index atomically (the caller holds the folder's lock)."""
    path = Path(directory) / INDEX
    tmp = path.with_name(f".{INDEX}.tmp")
    tmp.write_text(json.dumps(labels, indent=0, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def index_entry(meta: dict, label: str, labelled: float) -> dict:
    return {
        "label": label,
        "labelled": labelled,
        "event": meta.get("event"),
        "camera": meta.get("camera"),
        "t": meta.get("t"),
        "recorded": meta.get("recorded"),
    }


# -- the pose recordings of pruned labelled records ----------------------------------------------------------------
def keep_pose(directory: Path, event_id: str) -> int:
    """Move a labelled record's pose recording out of its folder (about to be deleted); its size, 0 if none."""
    source = Path(directory) / event_id / "pose.jsonl"
    try:
        (Path(directory) / POSES).mkdir(exist_ok=True)
        size = source.stat().st_size
        os.replace(source, Path(directory) / POSES / f"{event_id}.jsonl")
    except OSError:
        return 0
    return size


def trim_poses(directory: Path, max_bytes: float) -> int:
    """Delete the oldest kept pose recordings until they take at most ``max_bytes``; the bytes they still take."""
    try:
        kept = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in (Path(directory) / POSES).glob("*.jsonl"))
    except OSError:
        return 0
    total = sum(size for _, size, _ in kept)
    for _, size, path in kept:
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
    return total


def pose_recording(directory: Path, event_id: str) -> Path:
    """Where a labelled record's pose recording is: in its folder, or kept after the folder was pruned."""
    own = Path(directory) / event_id / "pose.jsonl"
    return own if own.is_file() else Path(directory) / POSES / f"{event_id}.jsonl"
