"""Issue 21, the debug server's side: the page cannot be used to starve the daemon or to act for another site.
Each test runs against a real DebugServer on a loopback port (real sockets, real event records, the real offload
worker process)."""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import os
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fallwatch.config.schema import EventsConfig
from fallwatch.daemon.records.recorder import EventRecorder
from fallwatch.daemon.web import server as web
from fallwatch.daemon.web.guard import check_state_change, server_names
from fallwatch.daemon.web.offload import NICE, Busy, Offload
from records_testlib import count_frames, make_record
from waiting import wait_until

POSE = "urfd-falls-keypoints/fall-01.jsonl"


def _request(port: int, path: str, method: str = "GET", body=None, headers=None, source: str = "127.0.0.1", **kw):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=kw.get("timeout", 30), source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.fixture
def with_records(start_server, tmp_path, clip_frames, data_dir):
    """A running server with two real event records (clip.avi and pose.jsonl each): (run, events dir)."""

    def make(count: int = 2, **cfg):
        run = start_server(**cfg)
        events_dir = tmp_path / "events"
        for i in range(count):
            make_record(events_dir, f"rec{i}", clip_frames[: 20 + i], data_dir / POSE)
        run.server.records = EventRecorder(EventsConfig(), events_dir)
        return run, events_dir

    return make


# ---- item 4: slow bodies, reserved slots, per-client limit -------------------------------------------------------
def test_dripping_post_bodies_cannot_hold_healthz_shut(with_records, feeders, clip_frames):
    # 40 clients sent a POST head with Content-Length: 4000, then one body byte every 20 s: every slot was taken
    # and /healthz and /metrics answered 503 for as long as they dripped. Now the body is read within a deadline
    # before the request takes a slot, in the bounded waiting pool.
    run, _ = with_records(count=1)
    feeders(run.hub, clip_frames)
    assert wait_until(lambda: run.request("/healthz")[0] == 200, timeout=10)
    head = (
        b"POST /api/records/rec0/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4000\r\n\r\n{"
    )
    drips, opened = [], time.monotonic()
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
        s.sendall(head)
        drips.append(s)
    answers: list[int] = []
    try:
        while time.monotonic() - opened < web.BODY_DEADLINE_S + 3:
            for s in drips:  # one more byte each, as a dripping client does
                try:
                    s.send(b" ")
                except OSError:
                    pass
            answers += [run.request(path, timeout=3)[0] for path in ("/healthz", "/metrics")]
            time.sleep(0.5)
        assert set(answers) == {200}, f"{answers.count(503)} of {len(answers)} answers were 503"
        # every dripping client is cut off at the deadline (408) or was dropped for a newer one: none is held
        for s in drips:
            s.settimeout(3)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply[:100]
    finally:
        for s in drips:
            s.close()


def _stream(port: int, source: str) -> http.client.HTTPResponse:
    """An open MJPEG stream (it holds a slot until closed; the response owns the socket)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request("GET", "/stream.mjpg")
    resp = conn.getresponse()
    assert resp.status == 200
    return resp


def test_healthz_and_metrics_have_slots_no_one_else_takes_and_each_address_a_limit(
    start_server, feeders, clip_frames, monkeypatch
):
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 3)  # a small server, so a few streams fill it
    monkeypatch.setattr(web, "MAX_PER_CLIENT", 2)
    run = start_server()
    feeders(run.hub, clip_frames)
    assert wait_until(lambda: run.request("/healthz")[0] == 200, timeout=10)
    streams = [_stream(run.port, "127.0.0.1"), _stream(run.port, "127.0.0.1")]
    try:
        status, headers, body = _request(run.port, "/api/stats", source="127.0.0.1")
        assert status == 429 and body.count(b"\n") == 1 and b"your address" in body
        assert headers["Retry-After"]
        assert _request(run.port, "/api/stats", source="127.0.0.2")[0] == 200, "another address is not limited"
        streams.append(_stream(run.port, "127.0.0.2"))  # every general slot taken now
        status, _, body = _request(run.port, "/api/stats", source="127.0.0.3")
        assert status == 503 and b"busy" in body
        for source in ("127.0.0.1", "127.0.0.3"):
            assert _request(run.port, "/healthz", source=source)[0] == 200
            assert _request(run.port, "/metrics", source=source)[0] == 200
    finally:
        for resp in streams:
            resp.close()
    assert wait_until(lambda: _request(run.port, "/api/stats")[0] == 200, timeout=10), "slots come back"


# ---- item 6: labels from another site --------------------------------------------------------------------------
def test_a_label_is_taken_only_from_this_servers_own_page(with_records):
    run, events_dir = with_records(hosts=["fallwatch.home"])
    url = "/api/records/rec0/label"
    here = f"127.0.0.1:{run.port}"
    good = {"Host": here, "Origin": f"http://{here}", "Content-Type": "application/json"}

    def post(label: str, **headers) -> tuple[int, bytes]:
        sent = {k: v for k, v in {**good, **headers}.items() if v is not None}
        status, _, body = _request(run.port, url, "POST", json.dumps({"label": label}), sent)
        return status, body

    def stored() -> object:
        return json.loads((events_dir / "rec0" / "event.json").read_text())["label"]

    refused = [
        ({"Host": "attacker.example", "Origin": "http://attacker.example", "Content-Type": "text/plain"}, 403),
        ({"Host": "attacker.example"}, 403),  # DNS rebinding: the attacker's name for this server
        ({"Host": f"attacker.example:{run.port}", "Origin": None}, 403),
        ({"Origin": "http://attacker.example"}, 403),  # a page of another site, through the user's browser
        ({"Origin": f"http://127.0.0.1:{run.port + 1}"}, 403),  # another port is another site
        ({"Origin": "null"}, 403),
        ({"Content-Type": "text/plain"}, 415),  # a cross-site fetch without a preflight
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": None}, 415),
    ]
    for headers, want in refused:
        sent = {k: v for k, v in {**good, **headers}.items() if v is not None}
        status, _, body = _request(run.port, url, "POST", b'{"label": "false_alarm"}', sent)
        assert status == want, (headers, status, body)
        assert body.count(b"\n") == 1 and body.startswith(b"refused: "), body
    assert stored() is None, "nothing was changed"
    assert post("fall") == (200, b'{"id": "rec0", "label": "fall"}')
    assert stored() == "fall"
    assert post("false_alarm", Host=f"localhost:{run.port}", Origin=f"http://localhost:{run.port}")[0] == 200
    assert post("fall", Host="fallwatch.home", Origin="https://fallwatch.home")[0] == 200  # a configured name
    assert post("false_alarm", Origin=None)[0] == 200  # no Origin: not a browser's cross-site request
    assert stored() == "false_alarm"


def test_host_names_a_server_bound_to_every_address_answers_as():
    names = server_names("0.0.0.0", ["Cam.Example."])
    json_ = {"Content-Type": "application/json; charset=utf-8"}
    # the address the connection came in on, the machine's name, a configured name (case and final dot aside)
    assert check_state_change({"Host": "192.168.1.20:8080", **json_}, names, "192.168.1.20") is None
    assert check_state_change({"Host": f"{socket.gethostname()}.local", **json_}, names, "192.168.1.20") is None
    assert check_state_change({"Host": "cam.example", **json_}, names, "192.168.1.20") is None
    assert check_state_change({"Host": "[::1]:8080", "Origin": "http://[::1]:8080", **json_}, names, "::1") is None
    assert check_state_change({"Host": "h:80", "Origin": "http://h", **json_}, frozenset({"h"}), "10.0.0.1") is None
    # an address this connection did not come in on, a name that is not ours, no Host at all
    assert check_state_change({"Host": "10.0.0.9:8080", **json_}, names, "192.168.1.20")[0] == 403
    assert check_state_change({"Host": "cam.example.attacker.net", **json_}, names, "192.168.1.20")[0] == 403
    assert check_state_change({**json_}, names, "192.168.1.20")[0] == 400
    assert check_state_change({"Host": "a@b", **json_}, names, "192.168.1.20")[0] == 400


# ---- item 7: heavy work, odd headers, clients that leave, unknown cameras ------------------------------------------
@pytest.mark.slow
def test_signals_are_computed_once_in_a_low_priority_process(with_records):
    # 8 clients polling /signals halved the frame rate: each poll recomputed the signals in the server's thread.
    run, events_dir = with_records()
    url = "/api/records/rec0/signals"

    def poll(_: int) -> bytes:
        status, _, body = _request(run.port, url)
        assert status == 200, body
        return body

    with ThreadPoolExecutor(8) as pool:
        bodies = set(pool.map(poll, range(8 * 5)))
    assert len(bodies) == 1 and json.loads(bodies.pop())["t"], "one and the same plot"
    assert run.server.offload.jobs == 1, "computed once, then kept"
    assert _request(run.port, "/api/records/rec1/signals")[0] == 200 and run.server.offload.jobs == 2
    (events_dir / "rec1" / "pose.jsonl").unlink()
    assert _request(run.port, "/api/records/rec1/signals")[:3:2] == (404, b"this record has no pose recording\n")


def test_the_offload_worker_is_another_process_at_low_priority():
    offload = Offload()
    try:
        assert offload.run("nice", os.nice, 0) == min(19, os.nice(0) + NICE)  # (this process may be niced too)
        assert offload.run("pid", os.getpid) != os.getpid()
    finally:
        offload.shutdown()


def test_a_job_past_its_time_is_killed_and_answered_busy():
    offload = Offload()
    started = time.monotonic()
    with pytest.raises(Busy, match="took too long"):
        offload.run("sleep", time.sleep, 60, timeout=2)
    assert time.monotonic() - started < 10 and not multiprocessing.active_children()
    assert offload.run("pid", os.getpid) != os.getpid(), "the next job runs"


@pytest.mark.slow
def test_clips_opened_at_once_are_converted_one_by_one_and_kept(with_records):
    run, events_dir = with_records(count=5)

    def clip(i: int) -> tuple[int, str, int]:
        status, headers, body = _request(run.port, f"/api/records/rec{i}/clip", timeout=120)
        return status, headers["Content-Type"], len(body)

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(clip, range(5)))
    assert all(status == 200 and ctype.startswith("video/") and size for status, ctype, size in answers), answers
    assert run.server.offload.jobs == 5
    for i in range(5):
        (playable,) = [
            p for p in (events_dir / f"rec{i}").iterdir() if p.name.startswith("clip.") and p.suffix != ".avi"
        ]
        assert count_frames(playable) == 20 + i, "every frame"
    assert [clip(i)[0] for i in range(5)] == [200] * 5 and run.server.offload.jobs == 5, "kept, not redone"
    for p in (events_dir / "rec0").glob("clip.*"):  # the disk is the cache: a copy removed is made again
        if p.suffix != ".avi":
            p.unlink()
    assert clip(0)[0] == 200 and run.server.offload.jobs == 6


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root, as .ci/run has): a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
def test_a_clip_first_viewed_on_a_full_disk_is_an_error_and_leaves_nothing(
    start_server, small_disk, clip_frames, data_dir
):
    # The converted copy was kept truncated and served as whole from then on.
    run = start_server()
    folder = make_record(small_disk, "rec0", clip_frames, data_dir / POSE)
    run.server.records = EventRecorder(EventsConfig(), small_disk)
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 24 * 1024))  # room for the codec probe and a few frames, not for the clip
    before = sorted(p.name for p in folder.iterdir())
    status, _, body = _request(run.port, "/api/records/rec0/clip", timeout=120)
    assert status == 507 and body.count(b"\n") == 1 and b"frames could be written" in body, (status, body)
    assert sorted(p.name for p in folder.iterdir()) == before, "nothing left behind"
    filler.unlink()  # room again: the next view converts the whole clip
    status, headers, body = _request(run.port, "/api/records/rec0/clip", timeout=120)
    assert status == 200 and headers["Content-Type"].startswith("video/")
    (playable,) = [p for p in folder.iterdir() if p.name.startswith("clip.") and p.suffix != ".avi"]
    assert count_frames(playable) == len(clip_frames) and len(body) == playable.stat().st_size


def test_a_range_of_thousands_of_digits_is_416_not_a_traceback(with_records, caplog, capfd):
    run, events_dir = with_records(count=1)
    (events_dir / "rec0" / "clip.webm").write_bytes(b"x" * 1000)  # as if converted already
    huge = "9" * 4301  # one more than int() takes from a string
    with caplog.at_level(logging.WARNING):
        status, headers, _ = _request(run.port, "/api/records/rec0/clip", headers={"Range": f"bytes={huge}-"})
        assert status == 416 and headers["Content-Range"] == "bytes */1000"
        status, headers, body = _request(run.port, "/api/records/rec0/clip", headers={"Range": f"bytes=10-{huge}"})
        assert status == 206 and headers["Content-Range"] == "bytes 10-999/1000" and len(body) == 990
        status, headers, body = _request(run.port, "/api/records/rec0/clip", headers={"Range": f"bytes=-{huge}"})
        assert status == 206 and len(body) == 1000
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in capfd.readouterr().err


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that crashes or is killed does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_leave_mid_request_or_mid_answer_leave_no_traceback(with_records, caplog, capfd):
    run, _ = with_records(count=1)
    long_name = "x" * 60000  # a 404 that names it: an answer larger than what the socket takes at once
    requests = [
        f"GET /latest.jpg?camera={long_name} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
        b"GET /api/records?camera=nosuch HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /api/records/rec0/clip HTTP/1.1\r\nHost: a\r\nRange: bytes=" + b"9" * 4301 + b"-\r\n\r\n",
        b"POST /api/records/rec0/label HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n",
    ]
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            for raw in requests:
                s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(raw)
                _reset(s)
        # the server has seen every one of them go (each thread ended) and still answers
        assert wait_until(lambda: threading.active_count() < 40 and run.request("/healthz")[0] in (200, 503))
        time.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in capfd.readouterr().err


def test_records_of_a_camera_that_never_was_are_404(with_records):
    run, events_dir = with_records(count=1)
    make_record(events_dir, "gone", [], Path(events_dir / "rec0" / "pose.jsonl"), camera="attic")
    status, _, body = _request(run.port, "/api/records?camera=nosuch")
    assert status == 404 and body == b"no camera 'nosuch'; the cameras are test-cam\n"
    assert [r["id"] for r in json.loads(_request(run.port, "/api/records?camera=test-cam")[2])["records"]] == ["rec0"]
    # a camera taken out of the configuration keeps its records reachable
    assert [r["id"] for r in json.loads(_request(run.port, "/api/records?camera=attic")[2])["records"]] == ["gone"]
