"""The cameras of a configuration, resolved: one CameraSetup per camera, whichever form the file uses.

``camera:`` (one camera, the global ``rules:`` and ``zones:``) and ``cameras:`` (several, by name, each with its
own rules overrides and zones) both come out as a list of CameraSetup, so the daemon, the commands and MQTT
read cameras one way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import CameraConfig, CameraEntry, CameraSettings, Config, RulesConfig, ZoneConfig, merge_overrides


@dataclass(frozen=True)
class CameraSetup:
    """One camera as the daemon runs it: its settings (``camera.name`` is ``name``), its rules with the
    camera's overrides merged over the global ones, and its zones."""

    name: str
    camera: CameraConfig
    rules: RulesConfig
    zones: tuple[ZoneConfig, ...]
    # The file's ``camera:`` form (one camera): its MQTT topics are the device's own (no camera level), ``--source``
    # may replace its source, and a source that cannot be used ends the start. Under ``cameras:`` (even with one
    # entry) each camera has its own topics and fails alone.
    alone: bool = False

    @property
    def topic(self) -> str | None:
        """The camera level of its MQTT topics (``<prefix>/<device>/<topic>/...``); None: the device's own."""
        return None if self.alone else self.name


def multi_camera(cfg: Config) -> bool:
    """Whether the file uses ``cameras:`` (even with one camera in it): MQTT then publishes per-camera topics.
    ``camera:`` keeps the single-camera topics it always had."""
    return cfg.cameras is not None


def camera_setups(cfg: Config) -> list[CameraSetup]:
    """Every configured camera in file order; ``camera:`` gives exactly one (its name, the global rules and
    zones)."""
    if cfg.cameras is None:
        return [CameraSetup(cfg.camera.name, cfg.camera, cfg.rules, tuple(cfg.zones), alone=True)]
    return [_resolve(name, entry, cfg.rules) for name, entry in cfg.cameras.items()]


def _resolve(name: str, entry: CameraEntry, rules: RulesConfig) -> CameraSetup:
    camera = CameraConfig(name=name, **entry.model_dump(include=set(CameraSettings.model_fields)))
    # (the merged rules were checked when the file was loaded: schema.camera_problems)
    merged = RulesConfig.model_validate(merge_overrides(rules.model_dump(), entry.rules.model_dump()))
    return CameraSetup(name, camera, merged, tuple(entry.zones))
