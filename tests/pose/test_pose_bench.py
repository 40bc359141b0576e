"""`fallwatch bench` on a real clip: the report has every figure, consistent with itself (not a timing test)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from fallwatch.daemon.cli.main import main as cli_main


@pytest.mark.slow
def test_bench_json_report(data_dir: Path, model_dir: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    clip = data_dir / "gmdcsa24-dev" / "Subject 2" / "ADL" / "23.mp4"
    cap = cv2.VideoCapture(str(clip))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    rc = cli_main(["bench", "--model-dir", str(model_dir), "--source", str(clip), "--json", "--loops", "2"])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    report = json.loads(out[0])
    assert report["frames"] == 2 * n and report["loops"] == 2
    assert report["backend"] == "cpu" and "CPU" in report["backend_reason"]
    # which runtime ran which model
    assert report["models"]["detector"]["backend"] == report["models"]["estimator"]["backend"] == "cpu"
    assert report["models"]["estimator"]["file"] == "movenet_single_pose_lightning_ptq.tflite"
    assert report["models"]["estimator"]["runtime"].startswith(("LiteRT ", "tflite_runtime "))
    assert report["fps"] > 0
    for stage in ("decode", "detect", "estimate", "track", "pose", "pipeline"):
        st = report["stage_ms"][stage]
        assert 0 <= st["median"] <= st["p95"]
    est, det = report["invoke_ms"]["estimator"], report["invoke_ms"]["detector"]
    assert est["count"] > 0.9 * report["frames"] and est["median"] > 0
    assert det["count"] >= 1 and det["median"] > 0
    # the detector ran about once per detect_every (15) frames, not on every frame
    assert 0 < report["detector_run_fraction"] <= 0.1
    assert report["overhead_ratio"] >= 1.0  # the pose stage includes the invokes themselves
    assert report["overhead_ratio_with_decode"] >= report["overhead_ratio"]
    assert report["model_cost_ratio"] >= 1.0
    assert 20 < report["peak_rss_mb"] < 2000
    assert isinstance(report["rss_growth_pct"], float)


def test_bench_text_and_bad_source(
    data_dir: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    rc = cli_main(["bench", "--model-dir", str(model_dir), "--source", str(tmp_path / "nope.mp4")])
    assert rc == 1
    assert capsys.readouterr().err.strip() == f"fallwatch bench: {tmp_path / 'nope.mp4'}: no such file"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    rc = cli_main(["bench", "--model-dir", str(model_dir), "--source", str(junk)])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fallwatch bench: ") and "junk.mp4" in err[-1]


def short_clip(clips: Path, tmp_path: Path, frames: int = 24) -> Path:
    """The first ``frames`` frames of a real clip, re-encoded."""
    cap = cv2.VideoCapture(str(clips / "Subject 1" / "Fall" / "15.mp4"))
    out = tmp_path / "short.mp4"
    writer = None
    for _ in range(frames):
        ok, bgr = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (bgr.shape[1], bgr.shape[0]))
        writer.write(bgr)
    cap.release()
    assert writer is not None
    writer.release()
    return out


@pytest.mark.slow
def test_bench_cameras_prints_per_camera_figures(
    data_dir: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.delenv("FALLWATCH_CONFIG", raising=False)
    clip = short_clip(data_dir / "gmdcsa24-dev", tmp_path)
    rc = cli_main(["bench", "--model-dir", str(model_dir), "--source", str(clip), "--cameras", "2"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert "as 2 cameras sharing one engine" in out[0] and "48 frames" in out[0] and "fps through the engine" in out[0]
    assert out[1].startswith("  camera1: 24 frames, ") and out[1].endswith(" fps, 0 dropped"), out
    assert out[2].startswith("  camera2: 24 frames, ") and out[2].endswith(" fps, 0 dropped"), out
    assert "overhead ratio" in out[3]

    rc = cli_main(
        ["bench", "--model-dir", str(model_dir), "--source", str(clip), "--cameras", "3", "--loops", "2", "--json"]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cameras"] == 3 and report["frames"] == 3 * 2 * 24 and report["fps"] > 0
    assert {name: cam["frames"] for name, cam in report["per_camera"].items()} == {
        "camera1": 48,
        "camera2": 48,
        "camera3": 48,
    }
    assert report["overhead_ratio"] >= 1.0 and report["rules"] is True

    rc = cli_main(["bench", "--model-dir", str(model_dir), "--source", str(clip), "--cameras", "0"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "fallwatch bench: --cameras must be at least 1, not 0"
