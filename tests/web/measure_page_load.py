"""What the debug page's heavy requests cost detection: `fallwatch run` on a looping dev clip (as fast as it goes),
its frame rate while 8 clients poll records' /signals and while 5 clips are opened at once (first-view
conversion), each as a ratio to the frame rate without load in the same run (rounds alternate, so machine load
hits all alike).

    .venv/bin/python tests/web/measure_page_load.py [--seconds 15] [--rounds 2]

Not a test (it takes minutes and a quiet machine); the figures are in the closing note of issue 21.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from records_testlib import make_record  # noqa: E402
from testnet import free_port  # noqa: E402

ROOT = HERE.parent.parent
SHARED = ROOT.parent / "shared"
SOURCE = SHARED / "data" / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"
POSES = sorted((SHARED / "data" / "urfd-falls-keypoints").glob("fall-*.jsonl"))
RECORDS = 5


def _frames(path: Path, count: int) -> list:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def _get(url: str, timeout: float = 600, source: str = "127.0.0.1") -> bytes:
    """GET from a loopback address of its own (each load client is another 'machine', as in the issue)."""
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", "/" + rest)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"{url}: {resp.status} {body[:100]!r}")
        return body
    finally:
        conn.close()


def _fps_over(base: str, seconds: float) -> float:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(json.loads(_get(base + "api/stats"))["fps"])
        time.sleep(0.5)
    return statistics.mean(samples[2:])  # the first second still shows the window before


def _signals_load(base: str, stop: threading.Event, source: str, every_s: float) -> None:
    """One client polling the records' signals, one request every ``every_s`` (0: back to back)."""
    i = 0
    while not stop.is_set():
        _get(f"{base}api/records/rec{i % RECORDS}/signals", source=source)
        i += 1
        stop.wait(every_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--poll-s", type=float, default=1.0, help="each /signals client's period (0: back to back)")
    parser.add_argument("--no-clips", action="store_true", help="measure the /signals load only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="page-load-"))
    events = work / "events"
    frames = _frames(SOURCE, 100)
    for i in range(RECORDS):
        make_record(events, f"rec{i}", frames, POSES[i])
    port = free_port()
    config = work / "fallwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"name": "test-cam", "realtime": False, "loop": True},
                "mqtt": {"enabled": False},
                "debug": {"enabled": True, "bind": f"127.0.0.1:{port}"},
                "events": {"enabled": True, "dir": str(events)},
            }
        )
    )
    env = dict(os.environ, FALLWATCH_MODEL_DIR=str(SHARED / "models"))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", str(SOURCE)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                if json.loads(_get(base + "api/stats", 2))["fps"] > 0:
                    break
            except OSError:
                pass
            time.sleep(1)
        time.sleep(5)
        ratios: dict[str, list[float]] = {"signals": [], "clips": []}
        for _ in range(args.rounds):
            quiet = _fps_over(base, args.seconds)
            stop = threading.Event()
            pollers = [
                threading.Thread(target=_signals_load, args=(base, stop, f"127.0.1.{n}", args.poll_s)) for n in range(8)
            ]
            for t in pollers:
                t.start()
            loaded = _fps_over(base, args.seconds)
            stop.set()
            for t in pollers:
                t.join()
            ratios["signals"].append(loaded / quiet)
            if args.no_clips:
                print(f"round: signals x8 {ratios['signals'][-1]:.2f}, quiet {quiet:.1f} fps", flush=True)
                continue
            quiet = _fps_over(base, args.seconds)
            for i in range(RECORDS):  # first views again
                for p in (events / f"rec{i}").glob("clip.*"):
                    if p.suffix != ".avi":
                        p.unlink()
            openers = [
                threading.Thread(target=_get, args=(f"{base}api/records/rec{i}/clip", 600, f"127.0.2.{i}"))
                for i in range(RECORDS)
            ]
            started = time.monotonic()
            for t in openers:
                t.start()
            loaded = _fps_over(base, args.seconds)
            for t in openers:
                t.join()
            ratios["clips"].append(loaded / quiet)
            print(
                f"round: signals x8 {ratios['signals'][-1]:.2f}, 5 clips {ratios['clips'][-1]:.2f} "
                f"(converted in {time.monotonic() - started:.1f} s), quiet {quiet:.1f} fps",
                flush=True,
            )
        for name, values in ratios.items():
            if not values:
                continue
            each = ", ".join(f"{v:.2f}" for v in values)
            print(f"{name}: fps with the load / without = {statistics.mean(values):.2f} ({each})")
    finally:
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
