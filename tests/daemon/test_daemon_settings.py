"""Every key of the pose: and rules: sections reaches the settings objects pose and rules take."""

from __future__ import annotations

from fallwatch.config.loader import parse_config
from fallwatch.daemon.app.settings import pose_settings, rule_settings

YAML = """
pose:
  backend: cpu
  num_threads: 3
  detect_every: 7
  smoothing: {enabled: false, min_cutoff: 2.5}
  enhance: {mode: "on", dark_luma: 60, clip_limit: 3}
rules:
  strategy: ambianic
  fall_angle_deg: 52
  settle_s: 0.8
  ambianic: {confidence: 0.3, angle_deg: 40, min_gap_s: 0.7}
"""


def test_non_default_values_reach_the_settings() -> None:
    cfg = parse_config(YAML, "t.yaml")
    pose = pose_settings(cfg)
    assert (pose.backend, pose.num_threads, pose.detect_every) == ("cpu", 3, 7)
    assert pose.smoothing.enabled is False and pose.smoothing.min_cutoff == 2.5
    assert (pose.enhance.mode, pose.enhance.dark_luma, pose.enhance.clip_limit) == ("on", 60, 3)
    rules = rule_settings(cfg)
    assert (rules.strategy, rules.fall_angle_deg, rules.settle_s) == ("ambianic", 52, 0.8)
    assert (rules.ambianic_confidence, rules.ambianic_angle_deg, rules.ambianic_min_interval_s) == (0.3, 40, 0.7)


def test_every_config_key_has_a_home() -> None:
    cfg = parse_config("", "t.yaml")
    pose, rules = pose_settings(cfg), rule_settings(cfg)
    for key, value in cfg.pose.model_dump(exclude={"smoothing", "enhance"}).items():
        assert getattr(pose, key) == value, key
    for key, value in cfg.pose.enhance.model_dump().items():
        assert getattr(pose.enhance, key) == value, f"enhance.{key}"
    for key, value in cfg.rules.model_dump(exclude={"ambianic"}).items():
        assert getattr(rules, key) == value, key


def test_zones_reach_the_rules_and_the_pose_engine() -> None:
    from fallwatch.rules.zones import Zone

    cfg = parse_config(
        "zones:\n"
        "  - {name: bed, kind: rest, points: [[0.5, 0.5], [1, 0.5], [1, 1]]}\n"
        "  - {name: tv, kind: ignore, points: [[0, 0], [0.2, 0], [0.2, 0.2], [0, 0.2]]}\n"
    )
    assert rule_settings(cfg).zones == (
        Zone("rest", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0)), "bed"),
        Zone("ignore", ((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2)), "tv"),
    )
    assert pose_settings(cfg).ignore_zones == (((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2)),)
    assert pose_settings(parse_config("")).ignore_zones == () and rule_settings(parse_config("")).zones == ()
