"""The debug web server over real HTTP on loopback, fed with real decoded video frames."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import time

import cv2
import numpy as np
import pytest
from fallwatch.daemon.telemetry.snapshot import MqttStats
from waiting import wait_until


def _open_stream(port: int, path: str = "/stream.mjpg", headers: dict | None = None, timeout: float = 10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers=headers or {})
    return conn, conn.getresponse()


def test_mjpeg_first_parts_are_jpegs_behind_the_declared_boundary(start_server, feeders, clip_frames, mjpeg_parts):
    run = start_server()
    feeders(run.hub, clip_frames, fps=15)
    conn, resp = _open_stream(run.port)
    try:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "multipart/x-mixed-replace"
        boundary = resp.headers.get_param("boundary")
        assert boundary and re.fullmatch(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", boundary)
        parts = mjpeg_parts(resp, boundary, 3)
    finally:
        conn.close()
    h, w = clip_frames[0].shape[:2]
    for headers, payload in parts:
        assert headers["content-type"] == "image/jpeg"
        assert payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9"
        img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (h, w)
    # the stream shows the video (plus overlays), not a blank or synthetic picture
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(parts[0][1], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    best = min(float(np.abs(img.astype(np.int16) - f.astype(np.int16)).mean()) for f in clip_frames)
    assert best < 12, f"stream frame differs from every clip frame by >= {best:.1f} grey levels"


def test_stream_height_and_fps_options(start_server, feeders, clip_frames, mjpeg_parts):
    run = start_server()
    feeders(run.hub, clip_frames, fps=20)
    conn, resp = _open_stream(run.port, "/stream.mjpg?fps=2&height=240")
    try:
        boundary = resp.headers.get_param("boundary")
        t0 = time.monotonic()
        parts = mjpeg_parts(resp, boundary, 4)
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    img = cv2.imdecode(np.frombuffer(parts[-1][1], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (240, 320)
    # 4 parts at 2 fps: the first at once, then one every 0.5 s (the feeder runs at 20 fps); never faster (a busy
    # machine may make it slower: the parts arriving at all is the check that the stream flows)
    assert elapsed >= 1.2, elapsed

    for bad in (
        "/stream.mjpg?fps=abc",
        "/stream.mjpg?fps=0",
        "/stream.mjpg?fps=1000",
        "/stream.mjpg?height=5",
        "/stream.mjpg?height=-3",
        "/latest.jpg?height=99999",
    ):
        status, _, body = run.request(bad)
        assert status == 400, bad
        assert body.strip() and b"\n" not in body.strip(), body  # a one-line reason


def test_no_jpeg_encoding_without_a_viewer(start_server, feeders, clip_frames, mjpeg_parts):
    run = start_server()
    feeder = feeders(run.hub, clip_frames, fps=20)
    assert wait_until(lambda: feeder.published >= 20)
    assert run.hub.encode_count == 0  # frames flowed, nobody watched: nothing encoded
    status, stats = run.json("/api/stats")
    assert stats["frames"] >= 20 and stats["viewers"] == 0
    assert run.hub.encode_count == 0  # stats calls do not encode either

    conn, resp = _open_stream(run.port, "/stream.mjpg?fps=10")
    boundary = resp.headers.get_param("boundary")
    seq_before = run.hub.seq
    parts = mjpeg_parts(resp, boundary, 3)
    assert run.json("/api/stats")[1]["viewers"] == 1
    # while watched: every distinct picture sent was encoded, and no frame more than once
    assert len({payload for _, payload in parts}) <= run.hub.encode_count <= run.hub.seq - seq_before + 1
    resp.close()  # the response holds its own reference to the socket
    conn.close()
    # the handler notices the client left, stops encoding and frees its thread
    assert wait_until(lambda: run.json("/api/stats")[1]["viewers"] == 0), (
        "stream handler did not notice the client left"
    )
    settled, published = run.hub.encode_count, feeder.published
    assert wait_until(lambda: feeder.published >= published + 5, 30), "the feeder stopped"
    assert run.hub.encode_count == settled, "frames were encoded with nobody watching"


def test_two_viewers_share_encodings(start_server, feeders, clip_frames, mjpeg_parts):
    run = start_server()
    feeder = feeders(run.hub, clip_frames, fps=4)
    c1, r1 = _open_stream(run.port, "/stream.mjpg?fps=30")
    c2, r2 = _open_stream(run.port, "/stream.mjpg?fps=30")
    try:
        b = r1.headers.get_param("boundary")
        start_seq = run.hub.seq
        mjpeg_parts(r1, b, 4)
        mjpeg_parts(r2, b, 4)
        frames_seen = run.hub.seq - start_seq + 2
        # each published frame is encoded once however many clients watch it
        assert run.hub.encode_count <= frames_seen, (run.hub.encode_count, frames_seen)
    finally:
        c1.close()
        c2.close()
    assert feeder.published > 0


def test_latest_jpg(start_server, feeders, clip_frames):
    run = start_server()
    status, headers, body = run.request("/latest.jpg")
    assert status == 503 and b"no frame" in body
    feeders(run.hub, clip_frames, fps=15)
    assert wait_until(lambda: run.hub.seq > 0)
    status, headers, body = run.request("/latest.jpg?height=120")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (120, 160)


def test_healthz_flips_to_503_when_feeding_stops_and_when_source_stops(start_server, feeders, clip_frames):
    run = start_server(health_max_age_s=1.0)
    status, body = run.json("/healthz")
    assert status == 503 and body["reason"] == "no frame yet"

    feeder = feeders(run.hub, clip_frames, fps=15)
    assert wait_until(lambda: run.request("/healthz")[0] == 200)
    status, body = run.json("/healthz")
    assert status == 200 and body["status"] == "ok" and body["last_frame_age_s"] < 1.0

    feeder.stop()  # inference stalls: no new frames
    t0 = time.monotonic()
    assert wait_until(lambda: run.request("/healthz")[0] == 503, timeout=6)
    assert 0.5 <= time.monotonic() - t0 <= 5.0
    status, body = run.json("/healthz")
    assert body["status"] == "unhealthy" and "no frame" in body["reason"]

    feeder = feeders(run.hub, clip_frames, fps=15)  # frames flow again
    assert wait_until(lambda: run.request("/healthz")[0] == 200)
    feeder.stop()
    run.hub.mark_source_stopped()  # e.g. the video file ended
    status, body = run.json("/healthz")
    assert status == 503 and body["reason"] == "source stopped"


def test_stats_events_and_metrics(start_server, feeders, clip_frames):
    run = start_server()
    feeder = feeders(run.hub, clip_frames, fps=15)
    assert wait_until(lambda: run.hub.seq >= 3)
    feeder.stop()  # the daemon's next report: one Snapshot, these figures in it
    run.set_figures(
        {"mqtt": MqttStats(enabled=True, connected=True, events_sent=3, events_queued=2), "uptime_s": 754.25},
        dropped_frames=7,
        state="fall",
    )
    ev = {"event": "fall", "id": "abc", "t": 1.5, "ts": "2026-11-23T18:00:00Z", "track": 2, "confidence": 0.9}
    run.hub.add_event(ev)

    status, stats = run.json("/api/stats")
    assert status == 200
    assert stats["version"] == "9.8.7" and stats["backend"] == "cpu" and stats["fps"] == 15
    assert stats["stage_ms"] == {"detect": 4.5, "pose": 7.25}
    assert stats["dropped_frames"] == 7 and stats["persons"] == 2 and stats["state"] == "fall"
    assert stats["events"]["sent"] == 3 and stats["events"]["queued"] == 2
    assert stats["mqtt"]["connected"] is True
    assert stats["uptime_s"] == 754.25 and stats["healthy"] is True
    assert stats["cameras"]["test-cam"]["dropped_frames"] == 7 and stats["cameras"]["test-cam"]["fps"] == 15

    status, events = run.json("/api/events")
    assert status == 200 and events["events"][-1]["id"] == "abc" and events["events"][-1]["event"] == "fall"
    for i in range(70):
        run.hub.add_event({"event": "recovered", "id": str(i)})
    assert len(run.json("/api/events")[1]["events"]) == 50  # only the recent ones are kept

    status, headers, body = run.request("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    sample_re = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
        r"(-?[0-9.e+-]+|NaN|[+-]Inf)$"
    )
    for line in body.decode().splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* \S", line), line
            continue
        m = sample_re.match(line)
        assert m, f"not Prometheus text format: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    cam = 'camera="test-cam"'
    assert samples[f"fallwatch_fps{{{cam}}}"] == 15
    assert samples[f'fallwatch_stage_ms{{{cam},stage="pose"}}'] == 7.25
    assert samples[f"fallwatch_dropped_frames_total{{{cam}}}"] == 7
    assert samples[f"fallwatch_persons{{{cam}}}"] == 2
    assert samples[f'fallwatch_state_info{{{cam},state="fall"}}'] == 1
    assert samples["fallwatch_events_sent_total"] == 3 and samples["fallwatch_events_queued"] == 2
    assert samples["fallwatch_mqtt_connected"] == 1
    assert samples["fallwatch_mqtt_healthy"] == 1 and samples["fallwatch_mqtt_restarts_total"] == 0
    assert samples['fallwatch_backend_info{backend="cpu"}'] == 1
    assert samples["fallwatch_uptime_seconds"] == 754.25


def test_page_is_self_contained(start_server):
    run = start_server()
    status, headers, body = run.request("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    for needed in ("stream.mjpg", "api/stats", "api/events"):
        assert needed in page
    # no CDN, no external resources: every URL the page names is relative to the daemon
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    status, _, head_body = run.request("/", method="HEAD")
    assert status == 200 and head_body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/static/index.html",
        "/daemon/web.py",
        "/../../etc/passwd",
        "/static/../../pyproject.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/..%2f..%2fpyproject.toml",
        "//etc/passwd",
        "/index.html/../../../pyproject.toml",
        "/./pyproject.toml",
        "/api/",
        "/api/stats/",
        "/metrics/../../../etc/passwd",
        "/stream.mjpg/../../etc/passwd",
        "/%00",
        "/static/%2e%2e/web.py",
    ],
)
def test_unknown_and_traversal_paths_404_without_file_content(start_server, path):
    run = start_server()
    status, _, body = run.request(path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"[project]" not in body and b"import" not in body
    assert len(body) < 100


def test_basic_auth_enforced(start_server, tmp_path, feeders, clip_frames, mjpeg_parts):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")
    run = start_server(username="alice", password_file=str(secret))
    feeders(run.hub, clip_frames, fps=15)
    good = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret-from-file").decode()}
    bad_headers = [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"bob:s3cret-from-file").decode()},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer s3cret-from-file"},
    ]
    for path in ("/", "/api/stats", "/metrics", "/healthz", "/latest.jpg", "/stream.mjpg", "/nope"):
        for headers in bad_headers:
            status, resp_headers, body = run.request(path, headers=headers)
            assert status == 401, (path, headers)
            assert resp_headers["WWW-Authenticate"].startswith("Basic realm=")
            assert b"\xff\xd8" not in body and b"fallwatch_" not in body
    assert wait_until(lambda: run.request("/healthz", headers=good)[0] == 200)
    assert run.request("/", headers=good)[0] == 200
    assert run.request("/api/stats", headers=good)[0] == 200
    assert run.request("/nope", headers=good)[0] == 404
    conn, resp = _open_stream(run.port, headers=good)
    try:
        assert resp.status == 200
        ((headers, payload),) = mjpeg_parts(resp, resp.headers.get_param("boundary"), 1)
        assert payload[:2] == b"\xff\xd8"
    finally:
        conn.close()


def test_inline_password_and_missing_password(start_server):
    run = start_server(username="bob", password="pw:with:colons")
    ok = {"Authorization": "Basic " + base64.b64encode(b"bob:pw:with:colons").decode()}
    assert run.request("/api/stats")[0] == 401
    assert run.request("/api/stats", headers=ok)[0] == 200
    with pytest.raises(ValueError, match="password"):
        start_server(username="bob")


def test_stop_ends_open_streams_promptly(start_server, feeders, clip_frames, mjpeg_parts):
    run = start_server()
    feeders(run.hub, clip_frames, fps=15)
    conn, resp = _open_stream(run.port, "/stream.mjpg?fps=1")
    mjpeg_parts(resp, resp.headers.get_param("boundary"), 1)
    t0 = time.monotonic()
    run.server.stop()
    assert time.monotonic() - t0 < 2.0
    # the client sees the end of the stream (EOF), not a hang
    rest = resp.read()
    assert time.monotonic() - t0 < 3.0
    assert len(rest) < 200_000
    conn.close()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", run.port, timeout=2).request("GET", "/healthz")


def test_bind_errors_are_one_clear_line(start_server):
    run = start_server()
    from fallwatch.config.schema import DebugConfig
    from fallwatch.daemon.telemetry.status_hub import StatusHub
    from fallwatch.daemon.web.server import DebugServer

    clash = DebugServer(DebugConfig(bind=f"127.0.0.1:{run.port}"), StatusHub("x"))
    with pytest.raises(OSError, match=rf"debug server cannot bind 127.0.0.1:{run.port}"):
        clash.start()


def test_json_is_strict_even_with_odd_figures(start_server):
    run = start_server()
    run.set_figures(fps=float("nan"), stage_ms={"detect": float("inf")})
    status, _, body = run.request("/api/stats")
    stats = json.loads(body, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert stats["fps"] is None and stats["stage_ms"]["detect"] is None
    status, _, body = run.request("/metrics")
    assert b'fallwatch_fps{camera="test-cam"} NaN' in body


def test_idle_stream_repeats_the_last_frame_and_notices_a_client_leaving(
    start_server, feeders, clip_frames, mjpeg_parts
):
    run = start_server()
    feeder = feeders(run.hub, clip_frames, fps=15)
    assert wait_until(lambda: run.hub.seq > 0)
    feeder.stop()
    run.hub.mark_source_stopped()  # the source ended: no new frames will come
    conn, resp = _open_stream(run.port, "/stream.mjpg?fps=5")
    parts = mjpeg_parts(resp, resp.headers.get_param("boundary"), 3)  # the last frame, then keep-alive repeats
    assert parts[0][1] == parts[1][1] == parts[2][1]
    encodes = run.hub.encode_count
    assert encodes == 1  # repeats reuse the bytes
    resp.close()
    conn.close()
    assert wait_until(lambda: run.server.viewers == 0, timeout=5), "idle stream never noticed the client left"


def test_waiting_card_before_the_first_frame_then_the_video(start_server, feeders, clip_frames, mjpeg_parts):
    run = start_server()
    conn, resp = _open_stream(run.port, "/stream.mjpg?fps=10")
    try:
        boundary = resp.headers.get_param("boundary")
        ((_, card),) = mjpeg_parts(resp, boundary, 1)
        img = cv2.imdecode(np.frombuffer(card, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and float(np.median(img)) < 50  # the dark 'waiting for frames' card
        assert run.hub.encode_count == 0
        feeders(run.hub, clip_frames, fps=15)
        for _ in range(10):  # a few more cards may be in flight, then the video arrives
            ((_, payload),) = mjpeg_parts(resp, boundary, 1)
            if payload != card:
                break
        frame = cv2.cvtColor(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert min(float(np.abs(frame.astype(np.int16) - f.astype(np.int16)).mean()) for f in clip_frames) < 12
    finally:
        resp.close()
        conn.close()


def test_viewer_cap(start_server, feeders, clip_frames, mjpeg_parts):
    from fallwatch.daemon.web.server import MAX_VIEWERS

    run = start_server()
    feeders(run.hub, clip_frames, fps=10)
    open_ = [_open_stream(run.port, "/stream.mjpg?fps=1&height=120") for _ in range(MAX_VIEWERS)]
    try:
        for _, resp in open_:
            mjpeg_parts(resp, resp.headers.get_param("boundary"), 1)
        status, _, body = run.request("/stream.mjpg")
        assert status == 503 and b"too many viewers" in body
        assert run.request("/healthz")[0] == 200  # the rest of the server still answers
    finally:
        for conn, resp in open_:
            resp.close()
            conn.close()
    assert wait_until(lambda: run.server.viewers == 0)
    conn, resp = _open_stream(run.port)
    assert resp.status == 200
    resp.close()
    conn.close()


def test_ipv6_loopback(start_server, feeders, clip_frames):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    run = start_server(bind="[::1]:0")
    feeders(run.hub, clip_frames, fps=10)
    assert run.server.url.startswith("http://[::1]:")
    assert wait_until(lambda: run.hub.seq > 0)
    conn = http.client.HTTPConnection("::1", run.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "query",
    [
        "height=%C2%B2",
        "height=%D9%A3%D9%A0%D9%A0",
        "height=-20",
        "height=1e3",
        "fps=%C2%B2",
        "fps=nan",
        "fps=inf",
        "fps=0",
    ],
)
def test_bad_query_values_are_400_on_every_image_route(start_server, feeders, clip_frames, query):
    # '²' passes str.isdigit() but not int(): that used to kill the handler (no response, a traceback).
    run = start_server()
    feeders(run.hub, clip_frames, fps=15)
    assert wait_until(lambda: run.request("/latest.jpg")[0] == 200)
    for path in ("/latest.jpg", "/stream.mjpg"):
        if path == "/latest.jpg" and query.startswith("fps"):
            continue
        status, _, body = run.request(f"{path}?{query}")
        assert status == 400, (path, query, status)
        assert body.count(b"\n") == 1 and (b"height" in body or b"fps" in body)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_405_with_allow_and_auth_first(start_server, method):
    run = start_server(username="alice", password="pw")
    ok = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    status, headers, _ = run.request("/api/stats", method=method)
    assert status == 401
    status, headers, body = run.request("/api/stats", method=method, headers=ok)
    assert status == 405, (method, status)
    assert headers["Allow"] == "GET, HEAD"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert len(body) < 100


def test_an_unexpected_handler_error_is_a_500_and_one_log_record(start_server, caplog, capfd):
    # Anything a route did not expect (here a frame the overlay refuses) used to drop the connection without an
    # answer and print a traceback straight to stderr, bypassing logging (and the journal's priorities).
    run = start_server()
    run.hub.publish_frame(np.zeros((48, 64), np.uint8), [], {})  # greyscale: draw_overlay raises ValueError
    capfd.readouterr()
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.web.server"):
        status, _, body = run.request("/latest.jpg")
    assert status == 500 and body == b"internal error\n"
    records = [r for r in caplog.records if r.name == "fallwatch.daemon.web.server" and r.levelno == logging.ERROR]
    assert len(records) == 1 and "/latest.jpg" in records[0].getMessage() and records[0].exc_info
    assert "Traceback" not in capfd.readouterr().err
    assert run.request("/healthz")[0] in (200, 503), "the server still answers"


def test_idle_connections_cannot_pile_up_threads(start_server):
    # Every accepted connection got its own thread, held up to 30 s by a client that sends nothing: beyond
    # loopback anyone (auth comes later, with the request) could pile up threads, and memory, on a small Pi.
    import socket
    import threading

    from fallwatch.daemon.web.server import MAX_WAITING

    run = start_server()
    before = threading.active_count()
    idle = []
    try:
        for _ in range(MAX_WAITING + 20):
            idle.append(socket.create_connection(("127.0.0.1", run.port), timeout=5))
        # the oldest 20 are dropped for the newer ones: their threads end
        assert wait_until(lambda: threading.active_count() - before <= MAX_WAITING + 2, timeout=10)
    finally:
        for s in idle:
            s.close()
    assert wait_until(lambda: run.request("/healthz")[0] in (200, 503), timeout=10), "served again once they left"


def test_waiting_cards_are_not_cached_per_height_without_bound(start_server, mjpeg_parts):
    # Every new ?height= added a cached 'waiting' JPEG: walking 16..2160 grew the daemon by ~80 MB.
    from concurrent.futures import ThreadPoolExecutor

    from fallwatch.daemon.web.server import MAX_VIEWERS, PLACEHOLDER_CACHE

    run = start_server()

    def card_height(height: int) -> int:
        conn, resp = _open_stream(run.port, f"/stream.mjpg?height={height}")
        try:
            ((headers, payload),) = mjpeg_parts(resp, resp.headers.get_param("boundary"), 1)
            return cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR).shape[0]
        finally:
            conn.close()

    # A card comes only after half a keep-alive period without frames: ask for PLACEHOLDER_CACHE heights at once,
    # within the viewer cap (streams that were closed count until their handler notices).
    heights = list(range(100, 100 + 3 * PLACEHOLDER_CACHE))
    with ThreadPoolExecutor(PLACEHOLDER_CACHE) as pool:
        for i in range(0, len(heights), PLACEHOLDER_CACHE):
            batch = heights[i : i + PLACEHOLDER_CACHE]
            assert wait_until(lambda: run.server.viewers + PLACEHOLDER_CACHE <= MAX_VIEWERS, timeout=10)
            assert list(pool.map(card_height, batch)) == batch
    assert 0 < run.server.placeholders_kept <= PLACEHOLDER_CACHE


def test_slow_clients_cannot_hold_healthz_shut(start_server, feeders, clip_frames):
    # Side door 4: 32 slots were taken before any request was read, so 32 clients dripping a header line every
    # 10 s kept /healthz and /metrics unreachable for as long as they liked. Now a connection only takes a slot
    # with a complete request head, the waiting ones are bounded (oldest dropped first) and each has a deadline.
    import socket

    from fallwatch.daemon.web.server import HEAD_DEADLINE_S, MAX_CONNECTIONS, MAX_WAITING

    run = start_server()
    feeders(run.hub, clip_frames)
    assert wait_until(lambda: run.request("/healthz")[0] == 200, timeout=10)
    slow = []
    try:
        for _ in range(max(MAX_WAITING, MAX_CONNECTIONS) + 36):
            s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line that ends the head
            slow.append(s)
        for _ in range(3):
            # answered while every slow socket is still open (before their deadline would have freed anything)
            assert run.request("/healthz", timeout=HEAD_DEADLINE_S - 1)[0] == 200
        # a client that never completes its head is cut off at the deadline, not held for the 30 s idle timeout
        last = slow[-1]
        last.settimeout(HEAD_DEADLINE_S + 5)
        assert last.recv(4096) == b""  # closed (a socket.timeout here would mean it was still held)
    finally:
        for s in slow:
            s.close()


def test_unknown_method_and_bad_request_line_are_plain_text(start_server):
    # Side door 8: a method no handler knows got Python's default 501 HTML page (naming the server's internals).
    # aiohttp's parser refuses a method HTTP does not define (400) before any route sees it; a method HTTP defines
    # is 405 (test_other_methods_are_405_with_allow_and_auth_first). Its answer to a garbled request line is an
    # HTTP/1.0 status line (it could not read the client's version).
    import socket

    run = start_server()
    status, headers, body = run.request("/api/stats", method="BREW")
    assert status == 400 and b"method" in body
    assert headers["Content-Type"].startswith("text/plain") and b"<" not in body
    with socket.create_connection(("127.0.0.1", run.port), timeout=5) as s:
        s.sendall(b"GET /a b c d\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.0 400") and b"text/plain" in reply and b"<html" not in reply.lower()


def test_a_get_body_is_read_not_parsed_as_the_next_request(start_server):
    # Side door 8: the body of a GET was left in the stream and read as the next request line.
    import socket

    run = start_server()
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", run.port), timeout=5) as s:
        s.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            + smuggled
            + b"GET /api/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 2, data[:400]
    assert b"fallwatch_fps" not in data and b'"events"' in data


def test_images_are_never_scaled_above_the_source_height(start_server, feeders, clip_frames):
    # Side door 8: ?height=2160 upscaled a 480-line frame to 2160 lines (CPU and bandwidth for nothing).
    run = start_server()
    run.hub.publish_frame(clip_frames[0], [], {})
    status, _, body = run.request("/latest.jpg?height=2160")
    assert status == 200
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == clip_frames[0].shape[:2]
    status, _, body = run.request("/latest.jpg?height=240")
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape[0] == 240


def test_healthz_says_the_camera_is_reopening(start_server, clip_frames):
    # Side door 8: /healthz said "source stopped" while the daemon was reopening the camera.
    run = start_server()
    run.hub.publish_frame(clip_frames[0], [], {})
    run.set_figures(capture="reopening", capture_error="no frames")
    run.hub.mark_source_stopped()
    status, body = run.json("/healthz")
    assert status == 503 and body["reason"] == "camera reopening (no frames)"
    run.set_figures(capture="eof", capture_error=None)
    assert run.json("/healthz")[1]["reason"] == "source stopped"


def test_answers_name_no_library_or_python_version_and_405_names_the_methods(start_server):
    # aiohttp's default Server header names Python's and its own version; every answer of ours says "fallwatch".
    run = start_server(username="alice", password="pw")
    ok = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    for path, headers, want in (
        ("/api/stats", ok, 200),
        ("/nope", ok, 404),
        ("/api/stats", {}, 401),
        ("/latest.jpg", ok, 503),
        ("/api/records/x/label", ok, 405),
    ):
        status, resp_headers, body = run.request(path, headers=headers)
        assert status == want, (path, status)
        assert resp_headers["Server"] == "fallwatch" and resp_headers["Cache-Control"] == "no-store", path
        assert resp_headers["X-Content-Type-Options"] == "nosniff", path
        if status != 200:
            assert body.count(b"\n") == 1 and resp_headers["Content-Type"].startswith("text/plain"), (path, body)
    assert run.request("/api/records/x/label", headers=ok)[1]["Allow"] == "POST"
    assert run.request("/api/alarms", method="PUT", headers=ok)[1]["Allow"] == "GET, HEAD, POST"


def test_kept_alive_connections_are_capped(start_server):
    # Each keep-alive connection holds a socket until keepalive_timeout: past MAX_KEPT_OPEN open at once, an
    # answer closes its connection instead of keeping it (more than the cap are opened here, one after another).
    import socket

    from fallwatch.daemon.web.server import MAX_KEPT_OPEN

    run = start_server()

    def ask(sock: socket.socket) -> bytes:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: fallwatch\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "closed before answering"
            head += chunk
        return head.split(b"\r\n\r\n")[0].lower()

    conns = [socket.create_connection(("127.0.0.1", run.port), timeout=5) for _ in range(MAX_KEPT_OPEN + 6)]
    try:
        assert wait_until(lambda: run.server.open_connections() == MAX_KEPT_OPEN + 6, timeout=10)
        heads = [ask(s) for s in conns]  # all open at once: the first 6 answers close their connections
        closing = [i for i, h in enumerate(heads) if b"connection: close" in h]
        assert closing == list(range(6)), closing
        for i in closing:
            while conns[i].recv(4096):  # the answer's body, then the server's close (recv gives b"")
                pass
        kept = conns[6:]
        assert all(b"connection: close" not in ask(s) for s in kept[:3]), "the kept ones still serve"
    finally:
        for s in conns:
            s.close()
    assert wait_until(lambda: run.request("/healthz")[0] in (200, 503), timeout=10)
