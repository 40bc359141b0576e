"""The SQLite outbox on its own: order, bound, durability, duplicates, a damaged file."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from fallwatch.daemon.mqtt.outbox import Outbox, connect_sqlite, default_state_dir


def test_mqtt_outbox_order_remove_and_reopen(tmp_path):
    path = tmp_path / "state" / "outbox.sqlite3"
    box = Outbox(path, 100)
    seqs = [box.put(f"id-{i}", f"payload {i}".encode())[0] for i in range(5)]
    assert seqs == sorted(seqs) and len(box) == 5
    assert box.remove(seqs[1]) and not box.remove(seqs[1])
    assert [i for _, i, _ in box.after(0, 10)] == ["id-0", "id-2", "id-3", "id-4"]
    assert [i for _, i, _ in box.after(seqs[2], 10)] == ["id-3", "id-4"]
    assert [i for _, i, _ in box.after(0, 2)] == ["id-0", "id-2"]
    box.close()
    again = Outbox(path, 100)  # a restart: same rows, same order, same payloads
    assert [(i, p) for _, i, p in again.after(0, 10)] == [(f"id-{n}", f"payload {n}".encode()) for n in (0, 2, 3, 4)]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # new rows always sort after the old ones, even after the newest was deleted
    last = again.after(0, 10)[-1][0]
    again.remove(last)
    assert again.put("id-5", b"5")[0] > last


def test_mqtt_outbox_bound_drops_oldest_and_counts_persistently(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, 3)
    dropped = [box.put(f"id-{i}", b"x")[1] for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert [i for _, i, _ in box.after(0, 10)] == ["id-2", "id-3", "id-4"] and box.dropped == 2
    box.close()
    box = Outbox(path, 3)
    assert box.dropped == 2
    assert box.set_max(1) == 2 and [i for _, i, _ in box.after(0, 10)] == ["id-4"] and box.dropped == 4


def test_mqtt_outbox_same_id_is_not_queued_twice(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 10)
    assert box.put("same", b"a")[0] is not None
    assert box.put("same", b"b") == (None, 0)
    assert len(box) == 1


def test_mqtt_outbox_damaged_file_is_set_aside(tmp_path, caplog):
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.mqtt.outbox"):
        box = Outbox(path, 10)
    assert any("not a usable SQLite database" in r.getMessage() for r in caplog.records)
    assert list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    box.put("a", b"1")
    assert len(box) == 1 and path.exists()


def test_mqtt_outbox_bad_bound_and_state_dir(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="max_items"):
        Outbox(tmp_path / "o.sqlite3", 0)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fallwatch:/other")
    assert str(default_state_dir(None)) == "/var/lib/fallwatch"
    assert default_state_dir(str(tmp_path)) == tmp_path
    monkeypatch.delenv("STATE_DIRECTORY")
    assert default_state_dir(None).parts[-3:] == (".local", "state", "fallwatch")


def test_mqtt_outbox_unopenable_path_is_left_alone(tmp_path, caplog):
    """Only a damaged database is set aside; a path SQLite cannot open (here a directory; in the field a file
    the daemon may not write, or a full disk) is not moved away with whatever it holds."""
    path = tmp_path / "outbox.sqlite3"
    path.mkdir()
    (path / "keep").write_text("x")
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.mqtt.outbox"):
        box = Outbox(path, 10)
    assert (path / "keep").exists() and not list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "cannot open" in messages[0] and "not survive a restart" in messages[0], messages
    assert box.put("a", b"1")[0] is not None and len(box) == 1  # still works, in memory


def test_mqtt_outbox_full_disk_error_is_reported_as_such(tmp_path):
    """SQLite rolls a transaction back itself on SQLITE_FULL; the error the caller sees must say the disk is full,
    not 'cannot rollback'."""
    opened: list[sqlite3.Connection] = []

    def connect(path: str) -> sqlite3.Connection:
        opened.append(connect_sqlite(path))
        return opened[-1]

    box = Outbox(tmp_path / "o.sqlite3", 100, connect=connect)
    box.put("a", b"1")
    (db,) = opened  # the outbox's own connection
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full: no page more
    with pytest.raises(sqlite3.OperationalError, match="full"):
        box.put("big", b"x" * 50_000)
    assert [i for _, i, _ in box.after(0, 10)] == ["a"]
    db.execute("PRAGMA max_page_count=1000000")
    assert box.put("again", b"x" * 50_000)[0] is not None  # usable again once there is room


def test_mqtt_outbox_damage_inside_the_payloads_is_found_at_open(tmp_path, caplog):
    """Damage past the table's first pages (an SD card) is found when the outbox opens, not later by the sender,
    which would then fail on every read and never send another event."""
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, 100)
    for i in range(3):
        box.put(f"id-{i}", bytes([65 + i]) * 20_000)  # overflow pages
    box.close()  # the last connection to close writes the WAL into the file
    data = bytearray(path.read_bytes())
    page = 4096
    data[6 * page : 6 * page + 8] = b"\xff" * 8
    data[7 * page : 7 * page + 4] = b"\xff" * 4
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.mqtt.outbox"):
        box = Outbox(path, 100)
    assert any("not a usable SQLite database" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
    assert list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    box.put("new", b"1")
    assert [i for _, i, _ in box.after(0, 10)] == ["new"]


@pytest.mark.slow
def test_events_queued_before_a_restart_are_sent_from_a_read_only_disk(tmp_path, mosquitto):
    # Side door 5: with the state disk read-only (a common SD-card failure) the outbox fell back to memory and
    # the events queued before the restart were never delivered. A tmpfs remounted read-only in a private mount
    # namespace stands in for the failed card (chmod does not stop root, and CI runs as root).
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from mqtt_testlib import Sub

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a read-only mount (CI runs as root)")
    state = tmp_path / "state"
    state.mkdir()
    sub = Sub(mosquitto.port, ["fallwatch/rodev/event"])
    try:
        script = Path(__file__).with_name("outbox_read_only_proc.py")
        result = subprocess.run(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount -t tmpfs tmpfs "$1" && exec "{sys.executable}" "{script}" "$1" {mosquitto.port}',
                "sh",
                str(state),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if (
            result.returncode != 0
            and not result.stdout
            and ("not permitted" in result.stderr or "denied" in result.stderr)
        ):
            pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")  # unshare or mount refused
        assert result.returncode == 0, result.stderr
        ids = json.loads(result.stdout.splitlines()[0])
        assert sub.wait_for(lambda s: len(s.on("fallwatch/rodev/event")) >= 2, 5)
        assert [json.loads(p)["id"] for p in sub.on("fallwatch/rodev/event")] == ids
        assert "can only be read" in result.stderr and "sent again after the next restart" in result.stderr
    finally:
        sub.close()
