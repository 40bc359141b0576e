"""Issue 21 item 3 against the daemon and the page: one `event.json` with `"recorded": null` beside a valid record
made `fallwatch run` exit at start (TypeError in the records listing; systemd restarted it into the same crash),
and the same file added while running made `/api/records` answer 500. Now the record is skipped with one warning,
`/api/records` names it under `skipped`, and the events page says so in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_events import FALL_CLIP, request, run_daemon, serve


def _damaged(events_dir: Path, name: str, **fields: object) -> None:
    folder = events_dir / name
    folder.mkdir(parents=True)
    meta = {"event": "fall", "id": name, "t": 1.0, "track": 1, "label": None, "recorded": 1.0e9, "frames": 0}
    (folder / "event.json").write_text(json.dumps({**meta, **fields}))


@pytest.mark.slow
def test_a_damaged_record_neither_stops_the_daemon_nor_the_page(tmp_path, model_dir, data_dir, chromium_dom):
    events_dir = tmp_path / "events"
    _damaged(events_dir, "broken-at-start", recorded=None)
    log = run_daemon(  # exited 1 with a TypeError before the first frame
        tmp_path,
        model_dir,
        str(data_dir / "gmdcsa24-dev" / FALL_CLIP),
        events={"dir": str(events_dir), "pre_s": 1, "post_s": 1},
    )
    assert "Traceback" not in log
    warned = [line for line in log.splitlines() if "broken-at-start" in line]
    assert len(warned) == 1 and "skipped: recorded: must be a valid number" in warned[0], log[-3000:]
    kept = [p.name for p in events_dir.iterdir() if not p.name.startswith(".") and p.name != "broken-at-start"]
    assert len([k for k in kept if k != "labels.json"]) == 1, kept  # the fall was recorded beside it
    server = serve(events_dir)
    try:
        _damaged(events_dir, "broken-while-running", recorded="yesterday")  # answered 500
        status, body = request(server, "/api/records")
        assert status == 200, body
        data = json.loads(body)
        assert [r["event"] for r in data["records"]] == ["fall"]
        assert data["skipped"] == [
            {"id": "broken-at-start", "problem": "recorded: must be a valid number"},
            {"id": "broken-while-running", "problem": "recorded: must be a valid number"},
        ]
        assert request(server, "/api/records/broken-at-start/signals")[0] == 404
        dom = chromium_dom(f"http://127.0.0.1:{server.port}/events.html", tmp_path)
        assert 'id="skipped"' in dom and "2 damaged record(s) skipped: broken-at-start (recorded:" in dom, dom[-2000:]
        assert f'id="rec-{data["records"][0]["id"]}"' in dom
    finally:
        server.stop()
