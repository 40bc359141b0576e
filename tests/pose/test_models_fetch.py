"""Model downloads over real HTTP from a local server: verified, atomic, clear errors, nothing half-written."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from fallwatch.pose import fetch
from fallwatch.pose.models import MODELS, ModelError, ModelSpec

TFLITE_HEAD = b"\x1c\x00\x00\x00TFL3"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def serve():
    """serve(directory) -> base URL of a real HTTP server on loopback; .requests lists the paths asked for."""
    servers = []

    def start(directory: Path) -> str:
        handler = type("Handler", (_QuietHandler,), {"requests": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        start.requests = handler.requests
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_fetch_installs_a_real_model_and_verifies_it(serve, model_dir: Path, tmp_path: Path) -> None:
    base = serve(model_dir)  # ../shared/models served read-only, as the upstream would
    dest = tmp_path / "models"
    progress = io.StringIO()
    result = fetch.fetch_model("movenet_lightning", dest, base_url=base, progress=progress)
    spec = MODELS["movenet_lightning"]
    assert result.path == dest / spec.file and result.pinned
    assert result.sha256 == spec.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert fetch.model_status(spec, dest) == fetch.OK
    assert result.path.stat().st_mode & 0o777 == 0o644  # readable by the daemon's own user
    assert _leftovers(dest) == []
    assert "movenet_lightning:" in progress.getvalue() and "(100%)" in progress.getvalue()


def test_fetch_extracts_detect_tflite_from_the_zip_archive(serve, model_dir: Path, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    spec = MODELS["ssd_mobilenet_v1"]
    archive = upstream / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the layout of the TF model zoo archive
        zf.writestr("labelmap.txt", (model_dir / "ssd_mobilenet_v1_coco_labelmap.txt").read_text())
        zf.write(model_dir / spec.file, "detect.tflite")
    dest = tmp_path / "models"
    result = fetch.fetch_model("ssd_mobilenet_v1", dest, base_url=serve(upstream))
    assert result.pinned and result.sha256 == spec.sha256
    assert (dest / spec.file).read_bytes() == (model_dir / spec.file).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [spec.file]  # no zip, no temporary files


def test_zip_without_the_member_is_refused(serve, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    with zipfile.ZipFile(upstream / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip", "w") as zf:
        zf.writestr("labelmap.txt", "???\nperson\n")
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match="the archive holds no detect.tflite"):
        fetch.fetch_model("ssd_mobilenet_v1", dest, base_url=serve(upstream))
    assert list(dest.iterdir()) == []


def test_sha256_mismatch_is_refused_and_leaves_no_file(serve, model_dir: Path, tmp_path: Path) -> None:
    spec = MODELS["movenet_lightning"]
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    corrupted = bytearray((model_dir / spec.file).read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF  # one flipped byte in a real model
    (upstream / spec.file).write_bytes(bytes(corrupted))
    dest = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        fetch.fetch_model("movenet_lightning", dest, base_url=serve(upstream))
    message = str(err.value)
    assert "\n" not in message
    assert "sha256 mismatch" in message and spec.sha256 in message
    assert hashlib.sha256(bytes(corrupted)).hexdigest() in message
    assert list(dest.iterdir()) == []


def test_mismatch_does_not_clobber_an_installed_file(serve, model_dir: Path, tmp_path: Path) -> None:
    spec = MODELS["movenet_lightning"]
    dest = tmp_path / "models"
    dest.mkdir()
    shutil.copyfile(model_dir / spec.file, dest / spec.file)
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / spec.file).write_bytes(TFLITE_HEAD + b"tampered")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        fetch.fetch_model("movenet_lightning", dest, base_url=serve(upstream))
    assert fetch.model_status(spec, dest) == fetch.OK
    assert _leftovers(dest) == []


def test_unreachable_host_gives_one_clear_line(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/"
    dest = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        fetch.fetch_model("movenet_lightning", dest, base_url=base, timeout=5)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download movenet_lightning from {base}movenet_single_pose_lightning_ptq")
    target = dest / MODELS["movenet_lightning"].file
    assert message.endswith(f"(is this machine offline? fetch it elsewhere and copy it to {target})")
    assert list(dest.iterdir()) == []


def test_http_error_is_reported(serve, tmp_path: Path) -> None:
    empty = tmp_path / "upstream"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"cannot download movenet_thunder from .*: HTTP 404"):
        fetch.fetch_model("movenet_thunder", tmp_path / "models", base_url=serve(empty))
    assert list((tmp_path / "models").iterdir()) == []


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fetch.BASE_URL_ENV, "http://mirror.local/models/")
    assert (
        fetch.download_url(MODELS["movenet_lightning"])
        == "http://mirror.local/models/movenet_single_pose_lightning_ptq.tflite"
    )
    # the query string of a MediaPipe generation-pinned address is not part of the file name
    assert fetch.download_url(MODELS["blazepose_lite"]) == "http://mirror.local/models/pose_landmark_lite.tflite"
    monkeypatch.delenv(fetch.BASE_URL_ENV)
    assert fetch.download_url(MODELS["movenet_lightning"]) == MODELS["movenet_lightning"].url


def test_unpinned_model_is_installed_but_reported_unpinned(
    serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    payload = TFLITE_HEAD + bytes(range(256)) * 4
    (upstream / "tiny.tflite").write_bytes(payload)
    monkeypatch.setitem(
        MODELS,
        "tiny",
        ModelSpec("tiny", "tiny.tflite", None, "https://example.invalid/tiny.tflite", "estimator", (8, 8), "coco17"),
    )
    dest = tmp_path / "models"
    result = fetch.fetch_model("tiny", dest, base_url=serve(upstream))
    assert not result.pinned and result.sha256 == hashlib.sha256(payload).hexdigest()
    assert fetch.model_status(MODELS["tiny"], dest) == fetch.UNPINNED


def test_unpinned_download_that_is_not_a_tflite_model_is_refused(
    serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "tiny.tflite").write_text("<html>rate limited</html>")  # what a captive portal returns
    monkeypatch.setitem(
        MODELS,
        "tiny",
        ModelSpec("tiny", "tiny.tflite", None, "https://example.invalid/tiny.tflite", "estimator", (8, 8), "coco17"),
    )
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match="did not return a TFLite model"):
        fetch.fetch_model("tiny", dest, base_url=serve(upstream))
    assert list(dest.iterdir()) == []


def test_unknown_model_and_unwritable_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        fetch.fetch_model("nope", tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelError, match="cannot create model directory"):
        fetch.fetch_model("movenet_lightning", blocker / "models")


def test_configured_models_follow_the_configuration() -> None:
    # backend auto: the CPU models are required (the fallback); the TPU builds are wanted. The default detector's
    # TPU build is Coral's compilation of the same network.
    assert fetch.configured_models("ssd_mobilenet_v1", "movenet_lightning") == (
        ["ssd_mobilenet_v1", "movenet_lightning"],
        ["ssd_mobilenet_v1_edgetpu", "movenet_lightning_edgetpu"],
    )
    assert fetch.configured_models("ssd_mobilenet_v1", "movenet_lightning", "cpu") == (
        ["ssd_mobilenet_v1", "movenet_lightning"],
        [],
    )
    assert fetch.configured_models("ssd_mobilenet_v2", "movenet_thunder", "edgetpu") == (
        ["ssd_mobilenet_v2", "movenet_thunder", "ssd_mobilenet_v2_edgetpu", "movenet_thunder_edgetpu"],
        [],
    )
    # BlazePose has no Edge TPU build
    assert fetch.configured_models("blazepose_detector", "blazepose_full") == (
        ["blazepose_detector", "blazepose_full"],
        [],
    )
