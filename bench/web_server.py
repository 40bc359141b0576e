"""The debug web server before (the hand-written http.server stack of commit a737d9e) and after (aiohttp), measured
in the same run, alternating (issue 23):

    .venv/bin/python bench/web_server.py [--rounds 3] [--seconds 6] [--json]

Each round starts each server in a process of its own, fed by a thread that publishes real decoded frames of a dev
clip (640x480) at 30 fps as the pipeline does, and measures from outside (the clients run in this process):
- requests/s on ``/api/stats`` (4 clients, keep-alive connections, for ``--seconds``);
- CPU of the server's process per MJPEG part delivered, with 1 and with 4 viewers (``?fps=30``; utime+stime from
  /proc, the feeder's share included in both: it is the same work);
- RSS of the process: idle after start, its peak (VmHWM) at the end, and the server's own share (the RSS after
  start, and after the streams, less the RSS before the server's module was imported and started).
Prints each figure's median over the rounds and the ratio new/old.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "a737d9e"  # main with the hand-written server, just before the move onto aiohttp
CLIP = "gmdcsa24-dev/Subject 1/Fall/13.mp4"
FEED_FPS = 30.0


def data_dir() -> Path:
    return Path(os.environ.get("FALLWATCH_DATA_DIR") or ROOT.parent / "shared" / "data")


# ---- the child: one server, fed with frames ----------------------------------------------------------------------
def old_server_class() -> Any:
    """DebugServer of the baseline commit, loaded from git (its static files are today's, unchanged)."""
    src = subprocess.run(
        ["git", "show", f"{BASELINE}:daemon/web/server.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("fallwatch_baseline_web_server")
    module.__file__ = str(ROOT / "daemon" / "web" / "server.py")
    sys.modules[module.__name__] = module
    exec(compile(src, f"{BASELINE}:daemon/web/server.py", "exec"), module.__dict__)
    return module.DebugServer


def serve(which: str) -> None:
    import cv2
    from fallwatch.config.schema import DebugConfig
    from fallwatch.daemon.telemetry.status_hub import StatusHub

    cap = cv2.VideoCapture(str(data_dir() / CLIP))
    frames = []
    while len(frames) < 60:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not frames:
        sys.exit(f"cannot decode {data_dir() / CLIP}")
    before_kb = status_kb(os.getpid(), "VmRSS")  # everything but the server (frames, cv2, numpy)
    if which == "old":
        server_class = old_server_class()
    else:
        from fallwatch.daemon.web.server import DebugServer as server_class
    hub = StatusHub("bench", camera="bench")
    server = server_class(DebugConfig(bind="127.0.0.1:0"), hub)
    server.start()

    def feed() -> None:
        i = 0
        while True:
            hub.publish_frame(frames[i % len(frames)], [], {})
            i += 1
            time.sleep(1 / FEED_FPS)

    threading.Thread(target=feed, daemon=True).start()
    print(server.port, before_kb, flush=True)
    sys.stdin.read()  # until the driver closes our stdin
    server.stop()


# ---- the driver ----------------------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def requests_per_s(port: int, seconds: float, clients: int = 4) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            conn.request("GET", "/api/stats")
            resp = conn.getresponse()
            json.loads(resp.read())
            assert resp.status == 200
            done[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def cpu_per_part(pid: int, port: int, viewers: int, seconds: float) -> tuple[float, float]:
    """(CPU ms of the server's process per part delivered, parts/s per viewer) with ``viewers`` streams open."""
    parts = [0] * viewers
    stop = threading.Event()
    opened = threading.Barrier(viewers + 1)

    def viewer(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/stream.mjpg?fps=30")
        resp = conn.getresponse()
        resp.read(4096)
        opened.wait()
        while not stop.is_set():
            if b"Content-Type: image/jpeg" in resp.read1(65536):
                parts[i] += 1  # (a part header never spans two reads of this size often enough to matter)
        conn.close()

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(viewers)]
    for t in threads:
        t.start()
    opened.wait()
    time.sleep(1.0)  # every viewer streaming
    before, counted = cpu_s(pid), sum(parts)
    t0 = time.monotonic()
    time.sleep(seconds)
    used, delivered, elapsed = cpu_s(pid) - before, sum(parts) - counted, time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join()
    return 1000 * used / max(1, delivered), delivered / elapsed / viewers


def measure(which: str, seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", which], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        port, before_kb = map(int, proc.stdout.readline().split())
        time.sleep(1.0)
        rss_kb = status_kb(proc.pid, "VmRSS")
        out = {"rss_idle_mb": rss_kb / 1024, "rss_of_server_mb": (rss_kb - before_kb) / 1024}
        out["stats_req_per_s"] = requests_per_s(port, seconds)
        out["cpu_ms_per_part_1"], out["parts_per_s_1"] = cpu_per_part(proc.pid, port, 1, seconds)
        out["cpu_ms_per_part_4"], out["parts_per_s_4"] = cpu_per_part(proc.pid, port, 4, seconds)
        out["rss_peak_mb"] = status_kb(proc.pid, "VmHWM") / 1024
        out["rss_of_server_after_mb"] = (status_kb(proc.pid, "VmRSS") - before_kb) / 1024
        out["threads"] = status_kb(proc.pid, "Threads")
        return out
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for which in ("old", "new") if r % 2 == 0 else ("new", "old"):  # alternating: drift hits both alike
            runs[which].append(measure(which, args.seconds))

    def median(which: str, key: str) -> float:
        return statistics.median(m[key] for m in runs[which])

    keys = list(runs["old"][0])
    table = {
        k: {"old": median("old", k), "new": median("new", k), "ratio": median("new", k) / median("old", k)}
        for k in keys
    }
    if args.json:
        print(json.dumps({"rounds": args.rounds, "seconds": args.seconds, "median": table, "runs": runs}, indent=1))
        return
    print(f"{'figure (median of ' + str(args.rounds) + ' rounds)':<34}{'old':>10}{'new':>10}{'new/old':>10}")
    for k, row in table.items():
        print(f"{k:<34}{row['old']:>10.2f}{row['new']:>10.2f}{row['ratio']:>10.2f}")


if __name__ == "__main__":
    main()
