"""`cameras:` (several cameras by name) beside `camera:` (one): loading, errors, and the resolved CameraSetup list."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fallwatch.config.cameras import CameraSetup, camera_setups, multi_camera
from fallwatch.config.loader import DEFAULT_CONFIG, ConfigError, effective_config_yaml, load_config, parse_config
from fallwatch.config.schema import CameraConfig, Config
from fallwatch.daemon.app.settings import ignore_polygons, pose_settings, rule_settings
from pydantic import ValidationError

SOFA = "[[0.1, 0.5], [0.4, 0.5], [0.4, 0.9], [0.1, 0.9]]"
TV = "[[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]"
TWO_CAMERAS = f"""\
rules:
  fall_angle_deg: 50
  ambianic: {{min_gap_s: 2.0}}
cameras:
  living:
    source: rtsp://cam:secret@192.0.2.10/stream
    rules: {{down_alert_s: 30, ambianic: {{confidence: 0.3}}}}
    zones:
      - {{name: sofa, kind: rest, points: {SOFA}}}
      - {{name: tv, kind: ignore, points: {TV}}}
  bathroom:
    source: v4l2:/dev/video0
    rotate: 180
    rules: {{strategy: ambianic, cooldown_s: null}}
"""


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "fallwatch.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert all("\n" not in line for line in err.value.errors)
    return err.value.errors


def test_two_cameras_resolve_with_their_rules_merged_and_their_own_zones() -> None:
    cfg = parse_config(TWO_CAMERAS, "t.yaml")
    assert multi_camera(cfg)
    living, bathroom = camera_setups(cfg)
    assert (living.name, living.camera.name, living.camera.source) == (
        "living",
        "living",
        "rtsp://cam:secret@192.0.2.10/stream",
    )
    assert (bathroom.name, bathroom.camera.name, bathroom.camera.rotate) == ("bathroom", "bathroom", 180)
    assert isinstance(living.camera, CameraConfig) and living.camera.width == 640  # defaults filled in
    # key by key over the global rules, rules.ambianic too; null keeps the global value
    assert (living.rules.down_alert_s, living.rules.fall_angle_deg, living.rules.strategy) == (30, 50, "fallwatch")
    assert (living.rules.ambianic.confidence, living.rules.ambianic.min_gap_s) == (0.3, 2.0)
    assert (bathroom.rules.down_alert_s, bathroom.rules.fall_angle_deg, bathroom.rules.strategy) == (60, 50, "ambianic")
    assert bathroom.rules.cooldown_s == 10 and bathroom.rules.ambianic.confidence == 0.6
    assert [z.name for z in living.zones] == ["sofa", "tv"] and bathroom.zones == ()
    assert cfg.rules.down_alert_s == 60 and cfg.zones == []  # the global sections are untouched


def test_each_camera_gets_its_own_rule_settings_and_ignore_zones() -> None:
    cfg = parse_config(TWO_CAMERAS, "t.yaml")
    living, bathroom = camera_setups(cfg)
    rules = rule_settings(cfg, living)
    assert (rules.down_alert_s, rules.fall_angle_deg, rules.ambianic_confidence) == (30, 50, 0.3)
    assert [(z.kind, z.name) for z in rules.zones] == [("rest", "sofa"), ("ignore", "tv")]
    assert rule_settings(cfg, bathroom).strategy == "ambianic" and rule_settings(cfg, bathroom).zones == ()
    tv = ((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2))
    assert ignore_polygons(cfg, living) == (tv,) and ignore_polygons(cfg, bathroom) == ()
    assert pose_settings(cfg, living).ignore_zones == (tv,) and pose_settings(cfg, bathroom).ignore_zones == ()


def test_a_single_camera_file_resolves_exactly_as_before() -> None:
    text = (
        "camera:\n  name: Hall Way\n  source: clip.mp4\nrules:\n  down_alert_s: 20\n"
        f"zones:\n  - {{name: bed, kind: rest, points: {SOFA}}}\n"
    )
    cfg = parse_config(text, "t.yaml")
    assert not multi_camera(cfg) and cfg.cameras is None
    assert camera_setups(cfg) == [CameraSetup("Hall Way", cfg.camera, cfg.rules, tuple(cfg.zones), alone=True)]
    (setup,) = camera_setups(cfg)
    assert rule_settings(cfg, setup) == rule_settings(cfg) and rule_settings(cfg).down_alert_s == 20
    assert pose_settings(cfg, setup) == pose_settings(cfg)
    default = load_config(DEFAULT_CONFIG)
    assert camera_setups(default) == [CameraSetup("camera", default.camera, default.rules, (), alone=True)]
    assert not multi_camera(default)


def test_a_camera_with_nothing_under_it_has_every_default() -> None:
    cfg = parse_config("cameras:\n  hall:\n  porch: {source: rtsp://192.0.2.3/s}\n", "t.yaml")
    hall, porch = camera_setups(cfg)
    assert hall.camera == CameraConfig(name="hall") and hall.rules == cfg.rules
    assert porch.camera.source == "rtsp://192.0.2.3/s"


def test_a_room_number_is_a_name() -> None:
    assert [s.name for s in camera_setups(parse_config("cameras:\n  101: {source: a.mp4}\n"))] == ["101"]


def test_environment_variables_work_inside_cameras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_TEST_CAM", "rtsp://192.0.2.9/live")
    (setup,) = camera_setups(parse_config("cameras:\n  hall:\n    source: ${FW_TEST_CAM}\n", "t.yaml"))
    assert setup.camera.source == "rtsp://192.0.2.9/live"


@pytest.mark.parametrize(
    "text, error",
    [
        (
            "camera:\n  name: hall\ncameras:\n  living: {source: a.mp4}\n",
            "fallwatch.yaml:1: camera: not allowed together with cameras: (each camera's settings go under "
            "cameras.<name>); remove camera:",
        ),
        (
            "log: {level: INFO}\ncameras: {}\n",
            "fallwatch.yaml:2: cameras: names no camera: give at least one (cameras: {<name>: {source: ...}}), or use "
            "camera: for a single camera",
        ),
        (
            "cameras:\n  living: {source: a.mp4}\n  Living Room: {source: b.mp4}\n",
            "fallwatch.yaml:3: cameras.Living Room: camera name 'Living Room' is not allowed: use 1 to 32 lower-case "
            "letters a-z, digits, _ and -, starting with a letter or digit (it becomes an MQTT topic level and a Home "
            "Assistant id)",
        ),
        (
            "cameras:\n  living:\n    source: a.mp4\n    name: lounge\n",
            "fallwatch.yaml:4: cameras.living.name: not allowed: the key above it (living) is this camera's name; "
            "rename the key to rename the camera",
        ),
        (
            f"zones:\n  - {{kind: rest, points: {SOFA}}}\ncameras:\n  living: {{source: a.mp4}}\n",
            "fallwatch.yaml:1: zones: zones are in the image coordinates of one camera, so with cameras: they go under "
            "cameras.<name>.zones; move them there",
        ),
        (
            "cameras:\n  living:\n    source: a.mp4\n    colour: red\n",
            "fallwatch.yaml:4: cameras.living.colour: unknown key (known keys: source, width, height, fps, rotate, "
            "flip, realtime, loop, reopen_max_s, min_fps, exposure_ms, analogue_gain, noise_reduction, rules, zones)",
        ),
        (
            "cameras:\n  living:\n    source: a.mp4\n    fps: 500\n",
            "fallwatch.yaml:4: cameras.living.fps: must be between 0 and 120 (more than 0)",
        ),
        (
            "cameras:\n  living:\n    rules:\n      down_alert_s: 0\n",
            "fallwatch.yaml:4: cameras.living.rules.down_alert_s: must be between 0 and 3600 (more than 0)",
        ),
        (
            "cameras:\n  living:\n    rules:\n      ambianic: {confidence: 2}\n",
            "fallwatch.yaml:4: cameras.living.rules.ambianic.confidence: must be between 0 and 1",
        ),
        (
            "cameras:\n  living:\n    rules:\n      strategy: mine\n",
            "fallwatch.yaml:4: cameras.living.rules.strategy: must be 'fallwatch' or 'ambianic'",
        ),
        (
            "cameras:\n  living:\n    rules:\n      down_alert: 30\n",
            "fallwatch.yaml:4: cameras.living.rules.down_alert: unknown key (known keys: strategy, window_min_s, "
            "window_max_s, reference_s, fall_angle_deg, min_drop, drop_without_turn, min_hip_drop, min_descent_rate, "
            "down_angle_deg, settle_s, settle_fraction, cooldown_s, down_alert_s, recover_s, upright_angle_deg, "
            "min_keypoint_score, min_body_frac, track_forget_s, floor_hip_max, confirm_s, ambianic)",
        ),
        (
            "cameras:\n  living:\n    zones:\n      - {kind: rest, points: [[0, 0], [1, 1]]}\n",
            "fallwatch.yaml:4: cameras.living.zones.0.points: a zone needs at least 3 points, got 2",
        ),
        (
            "cameras:\n  living:\n    source: rtsp://u:pw@192.0.2.1/s\n  hall:\n    source: rtsp://u:pw@192.0.2.1/s\n",
            "fallwatch.yaml:5: cameras.hall.source: the same source as cameras.living: each camera needs its own",
        ),
        (
            "cameras:\n  living:\n  hall:\n",
            "fallwatch.yaml:3: cameras.hall.source: auto, like cameras.living: both would open the same first camera; "
            "give each its source",
        ),
        (
            "cameras:\n  living_room: {source: a.mp4}\n  living-room: {source: b.mp4}\n",
            "fallwatch.yaml:3: cameras.living-room: Home Assistant reads it as cameras.living_room (- becomes _ in its "
            "entity ids); rename one of them",
        ),
        (
            "rules:\n  window_max_s: 1.0\ncameras:\n  living:\n    rules:\n      window_min_s: 1.5\n",
            "fallwatch.yaml:5: cameras.living.rules.window_max_s: must be more than window_min_s (this camera's rules "
            "merged over the global rules)",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_file_line_and_key(tmp_path: Path, text: str, error: str) -> None:
    assert errors_of(tmp_path, text) == [error]


def test_every_mistake_of_a_file_is_reported_in_one_run(tmp_path: Path) -> None:
    text = (
        f"camera:\n  name: hall\nzones:\n  - {{kind: rest, points: {SOFA}}}\nrules:\n  window_max_s: 1.0\n"
        "cameras:\n"
        "  Living:\n    source: a.mp4\n"
        "  living:\n    name: x\n    source: a.mp4\n    rules: {down_alert_s: -1, bogus: 1}\n"
        "  bath:\n    rules: {window_min_s: 1.5}\n"
        "mqtt:\n  port: 0\n"
    )
    errors = errors_of(tmp_path, text)
    assert [e.split(": ")[0] + ": " + e.split(": ")[1] for e in errors] == [
        "fallwatch.yaml:1: camera",
        "fallwatch.yaml:3: zones",
        "fallwatch.yaml:8: cameras.Living",
        "fallwatch.yaml:11: cameras.living.name",
        "fallwatch.yaml:12: cameras.living.source",
        "fallwatch.yaml:13: cameras.living.rules.down_alert_s",
        "fallwatch.yaml:13: cameras.living.rules.bogus",
        "fallwatch.yaml:15: cameras.bath.rules.window_max_s",
        "fallwatch.yaml:17: mqtt.port",
    ]


def test_a_config_built_in_code_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="camera: not allowed together with cameras:"):
        Config.model_validate({"camera": {"name": "hall"}, "cameras": {"living": {}}})
    with pytest.raises(ValidationError, match="cameras.hall.source: auto, like cameras.living"):
        Config.model_validate({"cameras": {"living": {}, "hall": {}}})


def test_the_effective_config_shows_the_form_in_use_and_loads_again() -> None:
    cfg = parse_config(TWO_CAMERAS, "t.yaml")
    effective = yaml.safe_load(effective_config_yaml(cfg))
    assert "camera" not in effective and "zones" not in effective
    assert effective["cameras"]["living"]["source"] == "rtsp://cam:***@192.0.2.10/stream"  # masked
    assert effective["cameras"]["living"]["rules"] == {"down_alert_s": 30.0, "ambianic": {"confidence": 0.3}}
    assert effective["cameras"]["bathroom"]["rules"] == {"strategy": "ambianic"}
    effective["cameras"]["living"]["source"] = "rtsp://192.0.2.10/stream"
    again = camera_setups(Config.model_validate(effective))
    assert [(s.name, s.rules.down_alert_s, len(s.zones)) for s in again] == [("living", 30, 2), ("bathroom", 60, 0)]
    single = yaml.safe_load(effective_config_yaml(parse_config("camera: {name: hall}\n")))
    assert "cameras" not in single and single["camera"]["name"] == "hall" and single["zones"] == []
