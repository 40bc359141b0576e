"""Several cameras in one `fallwatch run`: one camera that cannot be opened, or whose file ends, never stops the
others; the page's API names each camera."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from testnet import free_port
from waiting import wait_until

FALL_CLIP = "Subject 1/Fall/15.mp4"  # a side fall from a chair, at 1.8 - 6.0 s
ADL_CLIP = "Subject 2/ADL/24.mp4"


def get(bind: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{bind}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError:  # not listening yet
        return 0, b""


def get_json(bind: str, path: str) -> tuple[int, dict]:
    status, body = get(bind, path)
    return status, json.loads(body or b"{}")


@pytest.fixture
def daemon(tmp_path: Path, model_dir: Path):
    procs: list[subprocess.Popen] = []
    log_file = tmp_path / "stderr.log"

    def start(config: dict) -> subprocess.Popen:
        config.setdefault("events", {"dir": str(tmp_path / "events")})  # not the user's state directory
        path = tmp_path / "fallwatch.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))  # cameras in this order
        env = {
            "FALLWATCH_MODEL_DIR": str(model_dir),
            "PYTHONUNBUFFERED": "1",
            "PATH": "/usr/bin:/bin",
            "STATE_DIRECTORY": str(tmp_path / "state"),  # open alarms too: not the user's, not another run's
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(log_file, "wb"),
            env=env,
        )
        procs.append(proc)
        return proc

    start.log = lambda: log_file.read_text(errors="replace")  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cameras_that_cannot_be_opened_leave_the_others_running(daemon, data_dir: Path, tmp_path: Path) -> None:
    bind = f"127.0.0.1:{free_port()}"
    gone = tmp_path / "no-such-clip.mp4"
    rtsp = f"rtsp://127.0.0.1:{free_port()}/live"  # nothing listens there: retried, like one camera's
    proc = daemon(
        {
            "cameras": {
                "hall": {"source": str(data_dir / "gmdcsa24-dev" / FALL_CLIP), "loop": True},
                "gone": {"source": str(gone)},
                "door": {"source": rtsp, "reopen_max_s": 1},
            },
            "mqtt": {"enabled": False},
            "debug": {"enabled": True, "bind": bind},
        }
    )
    assert wait_until(lambda: proc.poll() is not None or get(bind, "/api/events?camera=hall")[0] == 200, 60)

    def hall_fell() -> bool:
        events = get_json(bind, "/api/events?camera=hall")[1]["events"]
        return proc.poll() is not None or any(e["event"] == "fall" for e in events)

    assert wait_until(hall_fell, 60) and proc.poll() is None, daemon.log()[-3000:]
    events = get_json(bind, "/api/events")[1]["events"]
    assert events and {e["camera"] for e in events} == {"hall"}
    assert get_json(bind, "/api/events?camera=gone")[1]["events"] == []

    _, stats = get_json(bind, "/api/stats")
    assert stats["camera_names"] == ["hall", "gone", "door"]
    cams = stats["cameras"]
    assert cams["hall"]["frames"] > 0 and cams["hall"]["camera"] == "running"
    assert (
        cams["gone"]["camera"] == "failed"
        and f"cameras.gone.source {gone}: no such file" in cams["gone"]["camera_error"]
    )
    assert cams["door"]["camera"] == "reopening" and cams["door"]["reopens"] >= 1
    # the failing camera said so in one line; the retried one is retried, as one camera would be
    assert len([line for line in daemon.log().splitlines() if "cameras.gone" in line]) == 1, daemon.log()[-3000:]
    assert len(re.findall(r"camera rtsp://127\.0\.0\.1:\d+/live unavailable: .*retrying", daemon.log())) >= 1

    status, health = get_json(bind, "/healthz")
    assert status == 503 and health["unhealthy"] == ["gone", "door"], health
    assert "camera gone: source failed" in health["reason"] and "camera door: camera reopening" in health["reason"]
    assert health["cameras"]["hall"]["healthy"] is True

    status, body = get(bind, "/latest.jpg?camera=hall")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert get(bind, "/latest.jpg?camera=gone")[0] == 503  # no frame from it, ever
    status, body = get(bind, "/latest.jpg?camera=attic")
    assert status == 404 and body == b"no camera 'attic'; the cameras are hall, gone, door\n"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0  # a stop asked for: exit 0, whatever the cameras do


@pytest.mark.slow
def test_a_file_that_ends_stops_its_camera_only_then_all_end(daemon, data_dir: Path, tmp_path: Path) -> None:
    # Two files played as fast as possible: the short one ends first, the other goes on to its end; then the
    # daemon ends by itself, exit 0 (no source failed).
    clips = data_dir / "gmdcsa24-dev"
    proc = daemon(
        {
            "cameras": {
                "hall": {"source": str(clips / FALL_CLIP), "realtime": False},
                "bedroom": {"source": str(clips / ADL_CLIP), "realtime": False},
            },
            "mqtt": {"enabled": False},
            "debug": {"enabled": False},
        }
    )
    assert proc.wait(120) == 0, daemon.log()[-3000:]
    log = daemon.log()
    ended = re.findall(r"camera (\w+): source ended; (.*)", log)
    assert sorted(name for name, _ in ended) == ["bedroom", "hall"], log[-3000:]
    assert [how for _, how in ended] == ["the others go on", "every camera has: stopping"]
    totals = dict(re.findall(r"camera (\w+) stopped after (\d+) frames", log))
    assert set(totals) == {"hall", "bedroom"} and all(int(n) > 50 for n in totals.values()), log[-3000:]
    assert re.search(r'event fall: \{.*"camera": "hall"', log), "the fall clip's camera raised its fall"


def test_every_camera_failing_exits_1(daemon, tmp_path: Path) -> None:
    proc = daemon(
        {
            "cameras": {"a": {"source": str(tmp_path / "a.mp4")}, "b": {"source": str(tmp_path / "b.mp4")}},
            "mqtt": {"enabled": False},
            "debug": {"enabled": False},
        }
    )
    assert proc.wait(60) == 1, daemon.log()[-3000:]
    assert "every camera has stopped: stopping" in daemon.log()


def test_reload_applies_each_cameras_rules_and_zones_and_asks_a_restart_for_the_rest(
    data_dir: Path, images_dir: Path, model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from fallwatch.config.loader import load_config
    from fallwatch.daemon.app.service import Daemon
    from fallwatch.daemon.app.settings import make_engine

    folders = {}
    for name, image in (("hall", "person.jpg"), ("bedroom", "squat.bmp")):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / image).symlink_to(images_dir / image)
    zone = {"name": "tv", "kind": "ignore", "points": [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]}

    def write(hall_angle: float, bedroom: dict, extra: dict) -> None:
        cameras = {
            "hall": {"source": str(folders["hall"]), "realtime": False, "rules": {"fall_angle_deg": hall_angle}},
            "bedroom": {"source": str(folders["bedroom"]), "realtime": False, **bedroom},
            **extra,
        }
        config = {"cameras": cameras, "mqtt": {"enabled": False}, "debug": {"enabled": False}}
        config["events"] = {"enabled": False}
        (tmp_path / "fallwatch.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    write(50, {}, {})
    cfg = load_config(tmp_path / "fallwatch.yaml")
    daemon = Daemon(cfg, config_path=tmp_path / "fallwatch.yaml", engine=make_engine(cfg, str(model_dir)))
    assert daemon.run() == 0  # both folders played to their end
    hall, bedroom = daemon.cameras["hall"], daemon.cameras["bedroom"]
    assert hall.tracker is not bedroom.tracker, "each camera tracks its own people"
    assert hall.pipeline.rules.s.fall_angle_deg == 50 and bedroom.pipeline.rules.s.fall_angle_deg != 50

    write(55, {"zones": [zone], "width": 800}, {"attic": {"source": str(images_dir)}})
    with caplog.at_level(logging.INFO, logger="fallwatch.daemon.app.reload"):
        assert daemon.reload()
    said = caplog.text
    assert "configuration reloaded: cameras.hall.rules.fall_angle_deg 50.0 -> 55.0" in said, said
    assert "configuration reloaded: cameras.bedroom.zones" in said
    assert "cameras.bedroom.width 640 -> 800 needs a restart" in said
    assert re.search(r"cameras\.attic\.source None -> \S+ needs a restart", said)
    assert hall.pipeline.rules.s.fall_angle_deg == 55  # applied to the running cameras ...
    assert bedroom.tracker.s.ignore_zones == ((((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2))),)
    assert hall.tracker.s.ignore_zones == ()
    assert [z.name for z in bedroom.pipeline.rules.s.zones] == ["tv"]
    assert (
        list(daemon.cfg.cameras) == ["hall", "bedroom"] and daemon.cfg.cameras["bedroom"].width == 640
    )  # ... not the rest
    shown = daemon.stats().to_json()["cameras"]  # what the page shows of each camera
    assert shown["hall"]["rules"]["fall_angle_deg"] == 55 and shown["bedroom"]["zones"][0]["name"] == "tv"


def test_source_option_is_refused_with_cameras(tmp_path: Path) -> None:
    config = tmp_path / "fallwatch.yaml"
    config.write_text(yaml.safe_dump({"cameras": {"hall": {"source": "v4l2:/dev/video0"}}}))
    proc = subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "run", "--config", str(config), "--source", "x.mp4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "fallwatch: --source x.mp4: not with cameras: (each camera has its source there)"
    ], proc.stderr
