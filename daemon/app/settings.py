"""From the validated configuration (config.schema.Config) to the plain settings objects pose and rules take.

pose/ and rules/ know no configuration file format; this is the one place that translates, so `run`, `detect`,
`bench` and `eval` build their engines and rules the same way.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

from fallwatch.config.cameras import CameraSetup
from fallwatch.daemon.mqtt.outbox import default_state_dir
from fallwatch.pose.engine import EnhanceSettings, PoseEngine, PoseSettings, SmoothingSettings
from fallwatch.pose.models import resolve_model_dir
from fallwatch.rules import RuleSettings
from fallwatch.rules.zones import Zone

# rules.ambianic.<key> in the YAML -> RuleSettings field (flat there).
_AMBIANIC_KEYS = {
    "confidence": "ambianic_confidence",
    "angle_deg": "ambianic_angle_deg",
    "min_gap_s": "ambianic_min_interval_s",
    "max_gap_s": "ambianic_max_interval_s",
}


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def pose_settings(cfg: Any, setup: Optional[CameraSetup] = None) -> PoseSettings:
    """PoseSettings from ``cfg.pose``, with the ignore zones of ``setup`` (default: the global ``zones:``)."""
    data = cfg.pose.model_dump()
    smoothing = data.pop("smoothing", None) or {}
    enhance = data.pop("enhance", None) or {}
    return PoseSettings(
        **_known(PoseSettings, data),
        smoothing=SmoothingSettings(**_known(SmoothingSettings, smoothing)),
        enhance=EnhanceSettings(**_known(EnhanceSettings, enhance)),
        ignore_zones=ignore_polygons(cfg, setup),
    )


def _zones(cfg: Any, setup: Optional[CameraSetup]) -> Any:
    return setup.zones if setup is not None else getattr(cfg, "zones", ())


def ignore_polygons(cfg: Any, setup: Optional[CameraSetup] = None) -> tuple:
    """The points of the ignore zones of ``setup`` (default: the global ``zones:``); the pose engine drops the
    people it finds in them."""
    return tuple(tuple((float(x), float(y)) for x, y in z.points) for z in _zones(cfg, setup) if z.kind == "ignore")


def rule_settings(cfg: Any, setup: Optional[CameraSetup] = None) -> RuleSettings:
    """RuleSettings from ``cfg.rules`` and ``zones:``, or from one camera's merged rules and zones
    (config.cameras.camera_setups); raises ValueError on a combination the rules refuse."""
    data = (setup.rules if setup is not None else cfg.rules).model_dump()
    ambianic = data.pop("ambianic", None)
    if isinstance(ambianic, dict):
        for key, value in ambianic.items():
            data.setdefault(_AMBIANIC_KEYS.get(key, f"ambianic_{key}"), value)
    data["zones"] = tuple(Zone.from_mapping(z) for z in _zones(cfg, setup))
    return RuleSettings.from_mapping(data)


def make_engine(cfg: Any, model_dir_arg: Optional[str] = None) -> PoseEngine:
    """The pose engine as configured, its models looked up in --model-dir, $FALLWATCH_MODEL_DIR or models.dir;
    raises ModelError / BackendError with a one-line message."""
    settings = pose_settings(cfg)
    settings.state_dir = str(default_state_dir(cfg.mqtt.state_dir))  # the Edge TPU crash marker lives there
    return PoseEngine(settings, resolve_model_dir(model_dir_arg, cfg.models.dir))


def settings_shown(setups: list[CameraSetup]) -> dict[str, Any]:
    """The rules and zones the page shows: the first camera's flat (``settings``), and with ``cameras:`` every
    camera's (``camera_settings``)."""

    def shown(setup: CameraSetup) -> dict[str, Any]:
        return {"rules": setup.rules.model_dump(mode="json"), "zones": [z.model_dump(mode="json") for z in setup.zones]}

    return {
        "settings": shown(setups[0]),
        "camera_settings": {} if setups[0].alone else {s.name: shown(s) for s in setups},
    }
