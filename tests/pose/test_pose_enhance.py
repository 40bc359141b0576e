"""Night enhancement (pose/enhance.py): dark, flat inputs are stretched, daylight ones are left alone, and a fall
in a night clip made with the issue's recipe is caught."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from fallwatch.pose.engine import PoseEngine, PoseSettings
from fallwatch.pose.enhance import Enhancer, EnhanceSettings, measure
from pose_testlib import first_frames, load_rgb

# The night look of the issue (monochrome, dark, flat, grainy, 15 fps).
NIGHT_RECIPE = "fps=15,format=gray,eq=brightness=-0.25:contrast=0.6:gamma=0.8,noise=alls=18:allf=t,format=yuv420p"


def night_look(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """The recipe's look on a still image: grey, darker, flatter, with grain."""
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    y = (y - 128.0) * 0.6 + 128.0 - 0.25 * 255.0
    y += np.random.default_rng(seed).uniform(-18, 18, y.shape)
    return cv2.cvtColor(np.clip(y, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)


def crop(rgb: np.ndarray, size: int = 192) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    square = rgb[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    return np.ascontiguousarray(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def test_a_dark_flat_crop_is_stretched(images_dir: Path) -> None:
    night = crop(night_look(load_rgb(images_dir / "person.jpg")))
    luma0, contrast0 = measure(night)
    assert luma0 < 80 and contrast0 < 40, "the night look is dark and flat"
    enhancer = Enhancer(EnhanceSettings(mode="auto"))
    image = night.copy()
    assert enhancer.apply(image) is True
    luma1, contrast1 = measure(image)
    assert luma1 > luma0 + 15, (luma0, luma1)
    assert contrast1 > 1.4 * contrast0, (contrast0, contrast1)
    figures = enhancer.figures()
    assert figures["on"] is True and figures["luma"] == round(luma0, 1) and figures["contrast"] == round(contrast0, 1)


def test_a_daylight_crop_is_untouched_in_auto_mode(images_dir: Path) -> None:
    day = crop(load_rgb(images_dir / "person.jpg"))
    luma, contrast = measure(day)
    assert luma > 80 and contrast > 30, "a daylight photo is neither dark nor flat"
    enhancer = Enhancer(EnhanceSettings(mode="auto"))
    image = day.copy()
    assert enhancer.apply(image) is False
    assert np.array_equal(image, day), "bit for bit"
    assert enhancer.figures()["on"] is False


def test_modes_on_and_off(images_dir: Path) -> None:
    day = crop(load_rgb(images_dir / "person.jpg"))
    on = day.copy()
    assert Enhancer(EnhanceSettings(mode="on")).apply(on) is True and not np.array_equal(on, day)
    night = crop(night_look(load_rgb(images_dir / "person.jpg")))
    off = night.copy()
    enhancer = Enhancer(EnhanceSettings(mode="off"))
    assert enhancer.apply(off) is False and np.array_equal(off, night)
    with pytest.raises(ValueError, match="pose.enhance.mode must be one of auto, on, off"):
        Enhancer(EnhanceSettings(mode="night"))


def test_colour_is_kept_when_a_dim_colour_crop_is_stretched(images_dir: Path) -> None:
    day = crop(load_rgb(images_dir / "person.jpg")).astype(np.float32)
    dim = np.clip(day * 0.3, 0, 255).astype(np.uint8)  # a dim room with the lights low: still in colour
    image = dim.copy()
    assert Enhancer(EnhanceSettings()).apply(image)
    assert measure(image)[0] > measure(dim)[0] + 15
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc0 = cv2.cvtColor(dim, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    assert np.abs(ycc[..., 1:] - ycc0[..., 1:]).mean() < 3, "only the luminance is stretched"


def test_engine_reports_the_enhancement_cost_apart(model_dir: Path, data_dir: Path) -> None:
    engine = PoseEngine(PoseSettings(backend="cpu"), model_dir)
    clip = data_dir / "gmdcsa24-dev-night" / "Subject 1" / "Fall" / "15.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not present")
    for t, rgb in first_frames(clip, 5):
        stage = engine.process(rgb, t).stage_ms
        assert 0.0 < stage["enhance"] <= stage["total"]
    assert engine.enhancer.figures()["on"] is True


@pytest.fixture(scope="module")
def night_clip(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    stored = data_dir / "gmdcsa24-dev-night" / "Subject 1" / "Fall" / "15.mp4"  # made with NIGHT_RECIPE
    if stored.is_file():
        return stored
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        pytest.skip("ffmpeg is not installed")
    src = data_dir / "gmdcsa24-dev" / "Subject 1" / "Fall" / "15.mp4"
    out = tmp_path_factory.mktemp("night") / "fall15-night.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(src),
            "-vf",
            NIGHT_RECIPE,
            "-c:v",
            "libx264",
            "-crf",
            "28",
            "-preset",
            "veryfast",
            str(out),
        ],
        check=True,
        timeout=120,
    )
    return out


@pytest.mark.slow
def test_a_fall_at_night_is_caught(night_clip: Path, model_dir: Path) -> None:
    """A sitting person falling off a chair, through the issue's night recipe: the default pipeline alarms, after
    the fall began (1.8 s) and before it ended (6.0 s)."""
    from fallwatch.config.loader import load_config
    from fallwatch.daemon.app.settings import make_engine, rule_settings
    from fallwatch.daemon.cli.measure.rules import run_video

    config = load_config(None)
    engine = make_engine(config, str(model_dir))
    events, _ = run_video(engine, night_clip, rule_settings(config))
    falls = [e for e in events if e.event == "fall"]
    assert falls, f"no fall at night; events: {[e.event for e in events]}"
    assert 1.8 <= falls[0].t <= 6.0, falls[0].t
    assert engine.enhancer.figures()["enhanced_fraction"] > 0.9, "the night clip was seen as dark"
