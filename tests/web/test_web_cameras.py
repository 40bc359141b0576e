"""The debug pages with several cameras (issue 16), in headless Chromium against a real DebugServer: the live view
lists the cameras with their states, shows the picked one's stream, figures and events, and keeps the pick in the
address; the events view names each record's camera and filters by it. With one camera nothing of this shows."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from fallwatch.config.schema import EventsConfig
from fallwatch.daemon.records.recorder import EventRecorder
from fallwatch.daemon.telemetry.snapshot import CameraStats
from fallwatch.daemon.telemetry.status_hub import StatusHub
from waiting import wait_until

HALL = CameraStats("hall", source="/dev/video0", capture="running", fps=12.5, persons=1, state="ok", frames=900)
YARD = CameraStats("yard", source="rtsp://yard", capture="failed", capture_error="no such device", state="fall")


def two_cameras(run) -> None:
    """Plays the daemon's report for two cameras, and one event from each."""
    run.hub.publish_stats(run.hub.current().replace(backend="cpu", cameras={"hall": HALL, "yard": YARD}))
    run.hub.add_event({"event": "fall", "id": "e-hall", "camera": "hall", "track": 1, "ts": "2026-11-30T20:00:00Z"})
    run.hub.add_event({"event": "person_down", "id": "e-yard", "camera": "yard", "track": 7, "confidence": 0.8})


def card(dom: str, name: str) -> str:
    """The camera list's card for ``name`` in a dumped page (its element with what is inside)."""
    found = re.search(rf'<a [^>]*data-camera="{name}"[^>]*>.*?</a>', dom, re.S)
    assert found, f"no card for camera {name}: " + dom.split('id="cameras"', 1)[-1][:1500]
    return found.group(0)


def has(html: str, cls: str, text: str) -> bool:
    """``html`` holds a span of class ``cls`` saying ``text``."""
    return re.search(rf'<span class="{cls}"[^>]*>{re.escape(text)}</span>', html) is not None


def stream_src(dom: str) -> str:
    found = re.search(r'<img id="stream"[^>]*\bsrc="([^"]*)"', dom)
    assert found, "the stream img has no src"
    return found.group(1).replace("&amp;", "&")


def test_live_view_lists_both_cameras_with_their_states(start_server, tmp_path, chromium_dom):
    run = start_server()
    two_cameras(run)
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/", tmp_path)
    nav = re.search(r'<nav id="cameras"[^>]*>', dom)
    assert nav and "hidden" not in nav.group(0), nav
    hall, yard = card(dom, "hall"), card(dom, "yard")
    assert has(hall, "name", "hall") and has(yard, "name", "yard")
    assert has(hall, "state ok", "ok") and has(hall, "capture muted", "running") and has(hall, "fps", "12.5 fps")
    # the fall is marked in the fall colour, the failed capture plainly
    assert 'class="cam fall"' in yard and has(yard, "state fall", "fall")
    assert has(yard, "capture bad", "failed")
    # no camera in the address: the first is shown, on its default stream
    assert 'aria-current="true"' in hall and 'aria-current="false"' in yard
    assert stream_src(dom) == "stream.mjpg"
    assert re.search(r'<span id="state" class="state ok">ok</span>', dom)
    assert re.search(r'<td id="camera" class="">running</td>', dom)
    assert re.search(r'<div id="capture-note" hidden="">', dom)


PICK_YARD = """(async () => {
  const until = async f => { for (let i = 0; i < 300; i++) { const v = f(); if (v) return v;
    await new Promise(r => setTimeout(r, 50)); } return null; };
  const $ = id => document.getElementById(id);
  const events = () => [...$("events").children].map(li => li.textContent);
  const yard = await until(() => document.querySelector('#cameras a[data-camera="yard"]'));
  await until(() => events().some(e => e.includes("track")));
  const before = {src: $("stream").getAttribute("src"), events: events()};
  yard.click();
  await until(() => $("stream").getAttribute("src") !== before.src && events().some(e => e.includes("track 7")));
  return {before, src: $("stream").getAttribute("src"), hash: location.hash, events: events(),
    state: $("state").textContent, stateClass: $("state").className, camera: $("camera").textContent,
    cameraClass: $("camera").className, note: $("capture-note").hidden ? null : $("capture-note").textContent,
    current: [...document.querySelectorAll('#cameras [aria-current="true"]')].map(a => a.dataset.camera),
    fps: $("fps").textContent, records: $("records").getAttribute("href"), title: document.title};
})()"""


def test_picking_the_second_camera_shows_its_stream_figures_and_events(start_server, tmp_path, chromium_eval):
    run = start_server()
    two_cameras(run)
    page = chromium_eval(f"http://127.0.0.1:{run.port}/", PICK_YARD, tmp_path)
    assert isinstance(page, dict), page
    assert page["before"]["src"] == "stream.mjpg"
    assert [e for e in page["before"]["events"] if "track" in e] == [page["before"]["events"][0]]
    assert "fall  track 1" in page["before"]["events"][0]
    assert page["src"] == "stream.mjpg?camera=yard"
    assert page["hash"] == "#camera=yard" and page["current"] == ["yard"]
    assert page["state"] == "fall" and page["stateClass"] == "state fall"
    assert page["camera"] == "failed (no such device)" and page["cameraClass"] == "bad"
    assert page["note"] == "camera yard failed (no such device)"
    assert page["fps"] == "0.0"
    assert len(page["events"]) == 1 and "person_down  track 7" in page["events"][0]
    assert page["records"] == "events.html?camera=yard"
    assert page["title"] == "fallwatch: yard"


@pytest.mark.parametrize("address", ["?camera=yard", "#camera=yard", "?camera=hall#camera=yard"])
def test_a_link_opens_that_camera(start_server, tmp_path, chromium_dom, address):
    run = start_server()
    two_cameras(run)
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/{address}", tmp_path)
    assert stream_src(dom) == "stream.mjpg?camera=yard"
    assert 'aria-current="true"' in card(dom, "yard") and 'aria-current="false"' in card(dom, "hall")
    assert re.search(r'<span id="state" class="state fall">fall</span>', dom)


def test_an_unknown_camera_in_the_address_shows_the_first(start_server, tmp_path, chromium_dom):
    run = start_server()
    two_cameras(run)
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/?camera=garage", tmp_path)
    assert stream_src(dom) == "stream.mjpg?camera=hall"
    assert 'aria-current="true"' in card(dom, "hall")


def test_one_camera_shows_no_camera_list(start_server, tmp_path, chromium_dom):
    run = start_server()
    run.set_figures(capture="reopening", capture_error="device gone")
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/?camera=elsewhere", tmp_path)
    assert re.search(r'<nav id="cameras"[^>]* hidden=""', dom)
    assert 'data-camera="' not in dom
    assert stream_src(dom) == "stream.mjpg"
    # a capture in trouble is said plainly with one camera too
    assert re.search(r'<td id="camera" class="bad">reopening \(device gone\)</td>', dom)
    assert re.search(r'<div id="capture-note">camera reopening \(device gone\)</div>', dom)


def _record(events_dir: Path, event_id: str, camera: str, recorded: float) -> None:
    folder = events_dir / event_id
    folder.mkdir(parents=True)
    meta = {"id": event_id, "event": "fall", "t": 5.0, "camera": camera, "track": 3, "confidence": 0.9, "frames": 0}
    (folder / "event.json").write_text(json.dumps({**meta, "clip": None, "label": None, "recorded": recorded}))
    (folder / "pose.jsonl").write_text("")


@pytest.fixture
def records_of_two_cameras(start_server, tmp_path):
    run = start_server()
    two_cameras(run)
    events_dir = tmp_path / "events"
    for i, camera in enumerate(["hall", "yard", "yard"]):
        _record(events_dir, f"ev{i}", camera, recorded=1000.0 + i)
    run.server.records = EventRecorder(EventsConfig(), events_dir)
    return run


def _shown_records(dom: str) -> dict[str, str]:
    """{record id: its camera} of the records the events view shows (not hidden by the filter)."""
    shown = {}
    for tag in re.findall(r'<div class="record"[^>]*>', dom):
        if " hidden" not in tag:
            shown[re.search(r'id="rec-([^"]+)"', tag).group(1)] = re.search(r'data-camera="([^"]*)"', tag).group(1)
    return shown


@pytest.mark.slow
def test_events_view_names_each_records_camera_and_filters_by_it(records_of_two_cameras, tmp_path, chromium_dom):
    run = records_of_two_cameras
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/events.html", tmp_path)
    assert _shown_records(dom) == {"ev0": "hall", "ev1": "yard", "ev2": "yard"}
    assert re.search(r'id="rec-ev0".*?<span class="camera">hall</span>', dom, re.S)
    assert re.search(r'<label id="filter">', dom), "no camera filter with two cameras"
    assert re.findall(r'<option value="([^"]*)"', dom) == ["", "hall", "yard"]
    assert '<span id="summary" class="muted">3 records</span>' in dom
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/events.html?camera=yard", tmp_path / "yard")
    assert _shown_records(dom) == {"ev1": "yard", "ev2": "yard"}
    assert '<span id="summary" class="muted">2 of 3 records</span>' in dom
    assert '<a id="live" href="./?camera=yard">' in dom


PICK_HALL_RECORDS = """(async () => {
  const until = async f => { for (let i = 0; i < 300; i++) { const v = f(); if (v) return v;
    await new Promise(r => setTimeout(r, 50)); } return null; };
  const select = await until(() => document.querySelector("#camera-filter option[value=hall]") &&
    document.getElementById("camera-filter"));
  select.value = "hall";
  select.dispatchEvent(new Event("change"));
  return {address: location.search + location.hash, summary: document.getElementById("summary").textContent,
    shown: [...document.querySelectorAll(".record")].filter(d => !d.hidden).map(d => d.id)};
})()"""


def test_events_view_filter_picked_in_the_browser(records_of_two_cameras, tmp_path, chromium_eval):
    run = records_of_two_cameras
    page = chromium_eval(f"http://127.0.0.1:{run.port}/events.html#camera=yard", PICK_HALL_RECORDS, tmp_path)
    assert page == {"address": "?camera=hall", "summary": "1 of 3 records", "shown": ["rec-ev0"]}


@pytest.mark.slow
def test_events_view_without_several_cameras_has_no_filter(start_server, tmp_path, chromium_dom):
    run = start_server()  # one camera, test-cam
    _record(tmp_path / "events", "ev0", "test-cam", recorded=1000.0)
    run.server.records = EventRecorder(EventsConfig(), tmp_path / "events")
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/events.html?camera=test-cam", tmp_path)
    assert re.search(r'<label id="filter" hidden="">', dom)
    assert _shown_records(dom) == {"ev0": "test-cam"}
    assert '<span class="camera">test-cam</span>' in dom


# ---- what needs the per-camera backend (issue 16): frames published per camera, served by ?camera= ----------
PER_CAMERA_HUB = "camera" in inspect.signature(StatusHub.publish_frame).parameters


def _checks(height: int = 480, width: int = 640) -> np.ndarray:
    """A picture no camera sees: magenta and green checks (RGB)."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    on = ((yy // 16 + xx // 16) % 2).astype(bool)
    img[on], img[~on] = (255, 0, 255), (0, 255, 0)
    return img


def _magenta_share(bgr: np.ndarray) -> float:
    b, g, r = (bgr[..., i].astype(int) for i in range(3))
    return float(np.mean((b > 180) & (r > 180) & (g < 80)))


@pytest.mark.skipif(
    not PER_CAMERA_HUB,
    reason="needs the per-camera StatusHub of issue 16 (publish_frame(..., camera=NAME)); enable after its merge",
)
def test_each_camera_streams_its_own_picture(start_server, clip_frames, tmp_path, chromium_screenshot):
    run = start_server()
    two_cameras(run)
    checks = _checks()
    for _ in range(3):
        run.hub.publish_frame(clip_frames[0], [], {}, camera="hall")
        run.hub.publish_frame(checks, [], {}, camera="yard")
    assert wait_until(lambda: run.hub.seq > 0)
    region = (slice(120, 500), slice(40, 620))  # inside the stream, below the camera list, whatever its height
    hall = chromium_screenshot(f"http://127.0.0.1:{run.port}/", tmp_path / "hall")[region]
    yard = chromium_screenshot(f"http://127.0.0.1:{run.port}/#camera=yard", tmp_path / "yard")[region]
    assert _magenta_share(yard) > 0.3, "the yard camera's stream does not show its picture"
    assert _magenta_share(hall) < 0.01, "the hall camera's stream shows the yard's picture"
    status, _, jpeg = run.request("/latest.jpg?camera=yard")
    assert status == 200
    assert _magenta_share(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)) > 0.3


def test_zone_tool_with_several_cameras_gives_the_picked_cameras_zones(start_server, tmp_path, chromium_dom):
    import html

    import yaml
    from fallwatch.config.loader import parse_config

    run = start_server()
    two_cameras(run)
    dom = chromium_dom(f"http://127.0.0.1:{run.port}/#camera=yard&draw=0.1,0.2;0.3,0.2;0.3,0.4", tmp_path)
    text = html.unescape(dom.split('id="zone-yaml"', 1)[1].split(">", 1)[1].split("</pre>", 1)[0])
    assert "cameras: (replacing the zones: of yard)" in text.splitlines()[0]
    data = yaml.safe_load(text)
    assert list(data["cameras"]) == ["yard"]
    # pasted beside the cameras' sources it is a valid configuration, with the zone on the yard camera
    data["cameras"]["yard"]["source"] = "rtsp://yard.local/stream"
    data["cameras"]["hall"] = {"source": "/dev/video0"}
    cfg = parse_config(yaml.safe_dump(data))
    assert cfg.cameras is not None and not cfg.cameras["hall"].zones
    assert [z.model_dump(mode="json") for z in cfg.cameras["yard"].zones] == [
        {"name": "bed", "kind": "rest", "points": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]]}
    ]
