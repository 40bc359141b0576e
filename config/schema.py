"""The configuration schema. Each section is a small pydantic model with ``extra="forbid"`` (unknown keys are
errors) and field descriptions, so the schema doubles as documentation (`fallwatch config schema`)."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Mapping, Optional

# The one model catalogue (standard library only, so loading a configuration stays light): which names each role
# accepts is read from it when a value is checked.
from fallwatch.pose import models as catalogue
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

TOPIC_WILDCARDS = "+#\0"
# A `cameras:` key becomes an MQTT topic level and part of Home Assistant object ids: lower case, no spaces,
# no wildcards, no slashes.
CAMERA_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class Section(BaseModel):
    """A cross-field check names the key it blames by starting its message with ``key: ``; the loader then
    reports that key's own line."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # Keys that are not allowed here for a reason worth saying (instead of "unknown key"); {parent} is the
    # key this section stands under.
    key_hints: ClassVar[dict[str, str]] = {}


class CameraSettings(Section):
    """What a camera is and how it is read; `camera:` adds its name, a `cameras:` entry is named by its key."""

    source: str = Field(
        "auto",
        description="auto | picamera2 | libcamera | v4l2:/dev/videoN | rtsp://... | http://... | a video file | "
        "a folder of images",
    )
    width: int = Field(640, ge=64, le=4096, description="capture width in pixels (picamera2, v4l2)")
    height: int = Field(480, ge=64, le=4096, description="capture height in pixels (picamera2, v4l2)")
    fps: float = Field(15, gt=0, le=120, description="capture frame rate (picamera2, v4l2)")
    rotate: Literal[0, 90, 180, 270] = Field(0, description="rotate frames clockwise by this many degrees")
    flip: Literal["none", "horizontal", "vertical", "both"] = Field("none", description="mirror frames")
    realtime: bool = Field(True, description="video files: pace at their own fps as a camera would")
    loop: bool = Field(False, description="video files: start again at the end instead of stopping")
    reopen_max_s: float = Field(
        30, gt=0, le=3600, description="longest wait between attempts to reopen a failed camera"
    )
    # Night (picamera2): how far the auto-exposure may go when the room is dark.
    min_fps: float = Field(
        10,
        gt=0,
        le=120,
        description="picamera2: in the dark the auto-exposure may lengthen "
        "frames down to this rate, no further "
        "(FrameDurationLimits); >= fps keeps the rate fixed",
    )
    exposure_ms: Optional[float] = Field(
        None, gt=0, le=1000, description="picamera2: fixed exposure time in ms (null: automatic, at most 1000/min_fps)"
    )
    analogue_gain: Optional[float] = Field(
        None, ge=1, le=64, description="picamera2: fixed analogue gain (null: automatic)"
    )
    noise_reduction: Literal["auto", "off", "fast", "high_quality"] = Field(
        "auto", description="picamera2: the ISP's denoise (auto: libcamera's choice; high_quality for night)"
    )

    @model_validator(mode="after")
    def _night_limits(self) -> "CameraSettings":
        slowest = min(self.min_fps, self.fps)  # a min_fps above fps just keeps the rate fixed
        if self.exposure_ms is not None and self.exposure_ms > 1000.0 / slowest:
            raise ValueError(
                f"exposure_ms: {self.exposure_ms:g} ms does not fit in a frame at {slowest:g} fps "
                f"(min_fps; at most {1000.0 / slowest:.0f} ms)"
            )
        return self


class CameraConfig(CameraSettings):
    name: str = Field("camera", description="name of this camera in events and heartbeats")


class SmoothingConfig(Section):
    enabled: bool = Field(True, description="One Euro filter on keypoints (jitter out, little lag)")
    min_cutoff: float = Field(1.0, gt=0, le=100, description="Hz; lower smooths a still person more")
    beta: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Hz added per person-height-per-second of speed; higher follows fast motion sooner",
    )
    d_cutoff: float = Field(1.0, gt=0, le=100, description="Hz; cutoff for the speed estimate")


class EnhanceConfig(Section):
    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="night enhancement of what the models see: auto = only dark, flat inputs, on, off"
    )
    dark_luma: float = Field(
        80, ge=0, le=255, description="auto: an input is enhanced when its mean luminance (0..255) is below this..."
    )
    low_contrast: float = Field(
        45, ge=0, le=255, description="...and its luminance standard deviation (0..255) below this"
    )
    clip_limit: float = Field(
        2.0, gt=0, le=40, description="CLAHE contrast limit (higher stretches more, and the grain with it)"
    )
    denoise: bool = Field(True, description="average the sensor grain away (at half resolution) before stretching")


class PoseConfig(Section):
    backend: Literal["auto", "edgetpu", "cpu"] = Field(
        "auto", description="auto tries the Edge TPU, then falls back to the CPU"
    )
    edgetpu_device: Literal["usb", "pci", ""] = Field("usb", description='Edge TPU device type; "" = any')
    edgetpu_probe_timeout_s: float = Field(
        20, ge=1, le=300, description="longest wait for the isolated Edge TPU probe before calling it hung"
    )
    num_threads: Optional[int] = Field(None, ge=1, le=64, description="CPU threads (default: all cores)")
    detector: str = Field("ssd_mobilenet_v1", description="person detector model (see `fallwatch models list`)")
    estimator: str = Field("movenet_lightning", description="pose estimator model")
    detect_threshold: float = Field(
        0.5, gt=0, lt=1, description="person detector score threshold (an empty room scores ~0.33)"
    )
    detect_every: int = Field(15, ge=1, le=1000, description="run the detector every N frames to find newcomers")
    track_timeout_s: float = Field(2.0, gt=0, le=60, description="forget a person unseen this long")
    max_persons: int = Field(4, ge=1, le=10, description="most people tracked at once")
    min_torso_score: float = Field(
        0.2, ge=0, le=1, description="a track lives on while its shoulders and hips reach this score"
    )
    rotation_retry: bool = Field(True, description="also try the crop turned by 90 degrees for lying people")
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    enhance: EnhanceConfig = Field(default_factory=EnhanceConfig)

    @field_validator("detector", "estimator")
    @classmethod
    def _known_model(cls, name: str, info: Any) -> str:
        role = info.field_name
        known = catalogue.cpu_models(role)
        if name in known:
            return name
        twins = catalogue.edgetpu_twins()
        if name in twins:
            raise ValueError(f"name the CPU model ({twins[name]}); the engine picks its Edge TPU build itself")
        if name in catalogue.cpu_models("estimator" if role == "detector" else "detector"):
            raise ValueError(
                f"{name} is {'a pose estimator' if role == 'detector' else 'a person detector'}, "
                f"not a {role} (known {role}s: {', '.join(known)})"
            )
        raise ValueError(f"unknown {role} model {name!r} (known: {', '.join(known)})")


class AmbianicConfig(Section):
    confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Ambianic's spinal-vector score threshold (its default 0.6; its MoveNet tests used 0.11)",
    )
    min_gap_s: float = Field(1.0, gt=0, le=10, description="compare with a frame at least this much earlier")
    max_gap_s: float = Field(10.0, gt=0, le=60, description="a previous frame older than this is not compared")
    angle_deg: float = Field(
        60, gt=0, lt=180, description="leaning angle between the two frames' shoulder-hip lines that counts as a fall"
    )


class RulesConfig(Section):
    # Mirrors fallwatch.rules.RuleSettings field for field (rules.ambianic.* -> ambianic_*). Lengths are in body
    # heights (the person's standing height in the image), times in seconds of media/capture time.
    strategy: Literal["fallwatch", "ambianic"] = Field(
        "fallwatch", description="fallwatch (default) or ambianic (baseline)"
    )
    window_min_s: float = Field(
        0.25, gt=0, le=10, description="changes are measured over at least this long (one-frame jitter is not motion)"
    )
    window_max_s: float = Field(
        2.0, gt=0, le=10, description="and at most this long: a fall goes from balance to floor well within it"
    )
    reference_s: float = Field(0.5, gt=0, le=5, description="the 'before' pose is the median over this span")
    fall_angle_deg: float = Field(
        60, ge=10, le=90, description="spine turn away from vertical that counts as a full topple"
    )
    min_drop: float = Field(
        0.25, gt=0, le=3, description="torso-midpoint drop (body heights) a fall needs when the spine fully topples"
    )
    drop_without_turn: float = Field(
        0.5,
        gt=0,
        le=3,
        description="torso-midpoint drop a fall needs when the spine does not turn (line-of-sight fall)",
    )
    min_hip_drop: float = Field(0.1, ge=0, le=3, description="the hips themselves must come down this much")
    min_descent_rate: float = Field(
        0.5, ge=0, le=20, description="fastest torso descent a fall reaches, body heights per second"
    )
    down_angle_deg: float = Field(60, ge=10, le=180, description="spine this far from vertical counts as lying")
    settle_s: float = Field(0.25, ge=0, le=10, description="the body stays down this long before 'fall'")
    settle_fraction: float = Field(0.6, gt=0, le=1, description="share of settle frames that must look down")
    cooldown_s: float = Field(10, ge=0, le=3600, description="at most one fall event per person in this span")
    down_alert_s: float = Field(60, gt=0, le=3600, description="still down this long after a fall: person_down")
    recover_s: float = Field(3, gt=0, le=600, description="upright again this long: recovered")
    upright_angle_deg: float = Field(35, ge=0, le=90, description="spine within this of vertical counts as upright")
    min_keypoint_score: float = Field(0.2, ge=0, le=1, description="keypoints below this are ignored")
    min_body_frac: float = Field(
        0.08, ge=0, le=1, description="a 'before' body shorter than this fraction of the frame height is implausible"
    )
    track_forget_s: float = Field(10, gt=0, le=3600, description="forget an upright person unseen this long")
    floor_hip_max: float = Field(
        0.2,
        ge=0,
        le=1,
        description="hips at most this high (body heights) above where the person's feet stood count as on the floor",
    )
    confirm_s: float = Field(
        3,
        ge=0,
        le=60,
        description="a fast drop ending squatting or sitting upright, legs "
        "folded, is a fall only if still down this long",
    )
    ambianic: AmbianicConfig = Field(default_factory=AmbianicConfig)

    @model_validator(mode="after")
    def _window_order(self) -> "RulesConfig":
        if self.window_min_s >= self.window_max_s:
            raise ValueError("window_max_s: must be more than window_min_s")
        if self.drop_without_turn < self.min_drop:
            raise ValueError("drop_without_turn: must be at least min_drop")
        return self


class ZoneConfig(Section):
    name: str = Field("", description="what it is (for people reading the file)")
    kind: Literal["rest", "ignore"] = Field(
        description="rest: bed or sofa, lying there is normal; ignore: TV, "
        "mirror or poster, people seen there are not people"
    )
    points: list[tuple[float, float]] = Field(
        description="polygon corners [x, y], normalised 0-1 of the image width and height (x right, y down)"
    )

    @field_validator("points")
    @classmethod
    def _polygon(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(points) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(points)}")
        for i, (x, y) in enumerate(points):
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"point {i} [{x}, {y}] is outside the image: x and y must be within 0-1")
        return points


class TlsConfig(Section):
    enabled: bool = Field(False, description="connect with TLS")
    ca_certs: Optional[str] = Field(None, description="CA certificate file (PEM); default: the system store")
    certfile: Optional[str] = Field(None, description="client certificate (PEM)")
    keyfile: Optional[str] = Field(None, description="client key (PEM)")
    insecure: bool = Field(False, description="skip the broker host name check (testing only)")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> "TlsConfig":
        if self.keyfile and not self.certfile:
            raise ValueError("keyfile: is set without certfile (the client certificate it belongs to)")
        return self


class HomeAssistantConfig(Section):
    enabled: bool = Field(True, description="publish Home Assistant MQTT discovery")
    discovery_prefix: str = Field("homeassistant", min_length=1, description="Home Assistant discovery prefix")

    @field_validator("discovery_prefix")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        _topic_without_wildcards(value)
        return value


def _topic_without_wildcards(value: Optional[str]) -> Optional[str]:
    if value is not None and any(c in value for c in TOPIC_WILDCARDS):
        raise ValueError(f"{value!r} contains an MQTT wildcard (+ or #) or NUL; a topic to publish to cannot")
    return value


class MqttConfig(Section):
    enabled: bool = Field(True, description="publish to an MQTT broker")
    host: str = Field("localhost", min_length=1, description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version")
    device_id: Optional[str] = Field(None, description="this device's id (default: the host name)")
    client_id: Optional[str] = Field(None, description="MQTT client id (default: fallwatch-<device_id>)")
    keepalive: int = Field(30, ge=5, le=3600, description="seconds between keepalive pings")
    username: Optional[str] = Field(None, description="broker user name")
    password: Optional[SecretStr] = Field(None, description="broker password (use ${ENV} or password_file)")
    password_file: Optional[str] = Field(None, description="file holding the broker password")
    tls: TlsConfig = Field(default_factory=TlsConfig)
    topic_prefix: Optional[str] = Field(None, description="topic prefix (default: fallwatch/<device_id>)")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of events")
    snapshots: bool = Field(
        False, description="publish a JPEG of the frame that raised each event (no image leaves the house unless asked)"
    )
    heartbeat_s: float = Field(30, ge=1, le=3600, description="seconds between heartbeats")
    outbox_max: int = Field(
        10000, ge=10, le=1_000_000, description="most events kept while the broker is unreachable; the oldest go first"
    )
    state_dir: Optional[str] = Field(
        None, description="where the event outbox lives (default: $STATE_DIRECTORY or ~/.local/state/fallwatch)"
    )
    reconnect_max_s: float = Field(60, ge=1, le=3600, description="longest wait between reconnect attempts")
    watchdog_s: float = Field(
        120,
        ge=2,
        le=86400,
        description="disconnected this long (or the network loop stopped), the MQTT client is restarted and "
        "/healthz and the systemd status say MQTT is down",
    )
    commands: bool = Field(
        True,
        description="accept commands on <prefix>/set (alerts on/off, test event); "
        "protect that topic with broker ACLs, or set false",
    )
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)

    @field_validator("topic_prefix")
    @classmethod
    def _no_wildcards(cls, value: Optional[str]) -> Optional[str]:
        return _topic_without_wildcards(value)

    @model_validator(mode="after")
    def _one_password(self) -> "MqttConfig":
        if self.password is not None and self.password_file:
            raise ValueError("password_file: set password or password_file, not both")
        if not self.username and (self.password is not None or self.password_file):
            which = "password_file" if self.password_file else "password"
            raise ValueError(f"{which}: is set but username is not (MQTT sends a password only with a user name)")
        return self


class DebugConfig(Section):
    enabled: bool = Field(True, description="serve the local debug page and stream")
    bind: str = Field("127.0.0.1:8080", pattern=r"^\S+:\d{1,5}$", description="host:port to listen on")
    username: Optional[str] = Field(None, description="basic-auth user (required beyond loopback)")
    password: Optional[SecretStr] = Field(None, description="basic-auth password")
    password_file: Optional[str] = Field(None, description="file holding the basic-auth password")
    stream_fps: float = Field(5, gt=0, le=30, description="default MJPEG stream frame rate")
    hosts: list[str] = Field(
        default_factory=list,
        description="other host names the page is opened by (e.g. a reverse proxy's); changes (labels) from "
        "any other name are refused",
    )

    @field_validator("bind")
    @classmethod
    def _port_in_range(cls, bind: str) -> str:
        if int(bind.rsplit(":", 1)[1]) > 65535:
            raise ValueError("the port must be between 0 and 65535")
        return bind

    @model_validator(mode="after")
    def _auth_beyond_loopback(self) -> "DebugConfig":
        host = self.bind.rsplit(":", 1)[0].strip("[]")
        try:  # a literal address only: a host name such as 127.0.0.1.example.com may resolve to anything
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if self.enabled and not loopback and not (self.username and (self.password or self.password_file)):
            raise ValueError(f"bind: binding to {host} beyond loopback requires username and password")
        if self.username and not (self.password or self.password_file):
            raise ValueError("username: is set but neither password nor password_file")
        return self


class AlertsConfig(Section):
    pause_max_s: float = Field(
        43200,
        ge=60,
        le=7 * 86400,
        description="alerts paused by an MQTT command resume by themselves after this long (announced)",
    )
    remind_s: float = Field(
        120,
        ge=10,
        le=86400,
        description="while an alarm is open (nobody answered), a reminder event every this many seconds, "
        "with level 1, 2, 3...",
    )


class NotifyConfig(Section):
    urls: list[SecretStr] = Field(
        default_factory=list,
        description="Apprise URLs to notify of falls, reminders and resolved alarms (ntfy://, tgram://, "
        "pover://, json://...); use ${ENV} or urls_file for their secrets",
    )
    urls_file: Optional[str] = Field(None, description="file with more Apprise URLs, one a line (# comments)")
    snapshot: bool = Field(True, description="attach the snapshot (skeleton only under privacy: skeleton)")
    retry_max_s: float = Field(300, ge=1, le=86400, description="longest wait between attempts while a service fails")

    @field_validator("urls")
    @classmethod
    def _apprise_urls(cls, value: list[SecretStr]) -> list[SecretStr]:
        if not value:
            return value  # (Apprise takes a while to import: only when there are URLs to check)
        from apprise import Apprise

        for i, url in enumerate(value):
            if Apprise.instantiate(url.get_secret_value(), suppress_exceptions=True) is None:
                scheme = url.get_secret_value().partition("://")[0] or "(none)"
                raise ValueError(f"urls[{i}]: not an Apprise URL Apprise can use (scheme {scheme})")
        return value


class ModelsConfig(Section):
    dir: Optional[str] = Field(
        None,
        description="model directory (default: /var/lib/fallwatch/models under "
        "systemd, ~/.cache/fallwatch/models otherwise)",
    )


class EventsConfig(Section):
    enabled: bool = Field(
        True,
        description="keep a local record (clip, pose recording, snapshot, event JSON) of "
        "every fall and person_down in the state directory",
    )
    pre_s: float = Field(5, ge=0, le=30, description="seconds of clip kept before the event")
    post_s: float = Field(5, ge=0, le=30, description="seconds of clip kept after the event")
    clip_height: int = Field(
        240, ge=64, le=1080, description="clip and pre-roll frame height in pixels (smaller costs less memory and CPU)"
    )
    max_mb: float = Field(
        500,
        gt=0,
        le=1_000_000,
        description="disk the records may use; the oldest go first, labelled or not (labels stay in labels.json)",
    )
    keep_days: float = Field(
        30,
        gt=0,
        le=3650,
        description="unlabelled records older than this are deleted; labelled ones only when events.max_mb needs room",
    )
    dir: Optional[str] = Field(None, description="where records live (default: <state dir>/events)")


class LogConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")


class _Overrides(Section):
    """Per-camera overrides of a section: every key optional, None (or not given) = the global value."""

    @model_serializer(mode="wrap")
    def _given_only(self, handler: Any) -> Any:
        return {k: v for k, v in handler(self).items() if v is not None}


def _overrides_of(model: type[Section], name: str) -> type[_Overrides]:
    """``model`` with every key optional and defaulting to None, bounds and choices kept (its cross-field
    checks run on the merged result, see camera_problems)."""
    fields: dict[str, Any] = {}
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            annotation = _overrides_of(annotation, annotation.__name__.replace("Config", "Overrides"))
        optional: Any = Optional[annotation]
        if field.metadata:  # the bounds (ge, le, ...)
            optional = Annotated[optional, *field.metadata]
        fields[key] = (optional, Field(None, description=field.description))
    return create_model(name, __base__=_Overrides, **fields)


if TYPE_CHECKING:

    class RulesOverrides(_Overrides):
        pass
else:
    RulesOverrides = _overrides_of(RulesConfig, "RulesOverrides")


def _camera_name(name: str) -> str:
    if not re.fullmatch(CAMERA_NAME, name):
        raise ValueError(
            f"camera name {name!r} is not allowed: use 1 to 32 lower-case letters a-z, digits, _ and -, "
            f"starting with a letter or digit (it becomes an MQTT topic level and a Home Assistant id)"
        )
    return name


CameraName = Annotated[str, AfterValidator(_camera_name), WithJsonSchema({"type": "string", "pattern": CAMERA_NAME})]


class CameraEntry(CameraSettings):
    """One camera of ``cameras:``; its key there is its name."""

    key_hints: ClassVar[dict[str, str]] = {
        "name": "not allowed: the key above it ({parent}) is this camera's name; rename the key to rename the camera"
    }

    rules: RulesOverrides = Field(
        default_factory=RulesOverrides,
        description="this camera's rules where they differ from the global rules: any of "
        "its keys, merged key by key (rules.ambianic too)",
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list, description="this camera's zones (rest, ignore), in its own image coordinates"
    )


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the given (not None) ``overrides`` put over it key by key, nested sections merged too."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_overrides(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def _cross_field_error(model: type[Section], data: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(key, message) of the section's own cross-field check on ``data``, if it fails (see Section)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            blamed = re.match(r"^Value error, (\w+): (.*)$", err["msg"])
            if not err["loc"] and blamed:
                return blamed.group(1), blamed.group(2)
    return None


def camera_problems(data: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    """(key path, message) for each problem of ``cameras:`` that its entries' own keys cannot show. ``data`` is
    the configuration as given (a plain mapping, possibly wrong elsewhere: what is not understood is skipped)."""
    cameras = data.get("cameras")
    if not isinstance(cameras, Mapping):
        return []
    problems: list[tuple[tuple, str]] = []
    if "camera" in data:
        problems.append(
            (
                ("camera",),
                "not allowed together with cameras: (each camera's settings go under cameras.<name>); remove camera:",
            )
        )
    if not cameras:
        problems.append(
            (
                ("cameras",),
                "names no camera: give at least one (cameras: {<name>: {source: ...}}), or "
                "use camera: for a single camera",
            )
        )
    if data.get("zones"):
        problems.append(
            (
                ("zones",),
                "zones are in the image coordinates of one camera, so with cameras: they go "
                "under cameras.<name>.zones; move them there",
            )
        )
    entries = {str(name): entry if isinstance(entry, Mapping) else {} for name, entry in cameras.items()}
    problems += _entity_id_twins(list(entries))
    problems += _shared_sources(entries)
    problems += _merged_rules_problems(data.get("rules") or {}, entries)
    return problems


def _entity_id_twins(names: list[str]) -> list[tuple[tuple, str]]:
    # Home Assistant entity ids allow only a-z 0-9 _: it turns - into _, so living-room and living_room would
    # be one entity.
    problems: list[tuple[tuple, str]] = []
    first: dict[str, str] = {}
    for name in names:
        twin = first.setdefault(name.replace("-", "_"), name)
        if twin != name:
            problems.append(
                (
                    ("cameras", name),
                    f"Home Assistant reads it as cameras.{twin} (- becomes _ in its entity ids); rename one of them",
                )
            )
    return problems


def _shared_sources(entries: Mapping[str, Mapping[str, Any]]) -> list[tuple[tuple, str]]:
    # One device or stream read twice is one room reported twice (or a busy device); `auto` is no exception:
    # two of them would both take the same first camera. Only equal strings are caught (not auto beside the
    # device it will pick).
    problems: list[tuple[tuple, str]] = []
    first: dict[str, str] = {}
    for name, entry in entries.items():
        source = entry.get("source", "auto")
        if not isinstance(source, str):
            continue
        twin = first.setdefault(source.strip(), name)
        if twin != name:
            problems.append(
                (
                    ("cameras", name, "source"),
                    f"auto, like cameras.{twin}: both would open the same first camera; give each its source"
                    if source.strip() == "auto"
                    else f"the same source as cameras.{twin}: each camera needs its own",
                )
            )
    return problems


def _merged_rules_problems(rules: Any, entries: Mapping[str, Mapping[str, Any]]) -> list[tuple[tuple, str]]:
    """Overrides that are fine key by key but not over the global rules (window_min_s above window_max_s...)."""
    if not isinstance(rules, Mapping):
        return []
    problems: list[tuple[tuple, str]] = []
    global_error = _cross_field_error(RulesConfig, rules)  # (reported for rules: itself)
    for name, entry in entries.items():
        overrides = entry.get("rules")
        if isinstance(overrides, Mapping) and overrides:
            error = _cross_field_error(RulesConfig, merge_overrides(rules, overrides))
            if error and error != global_error:
                problems.append(
                    (
                        ("cameras", name, "rules", error[0]),
                        f"{error[1]} (this camera's rules merged over the global rules)",
                    )
                )
    return problems


class Config(Section):
    camera: CameraConfig = Field(default_factory=CameraConfig)
    cameras: Optional[dict[CameraName, CameraEntry]] = Field(
        None,
        description="several cameras by name, instead of camera: (name: its camera settings, rules "
        "overrides and zones); null: the single camera: section",
    )
    pose: PoseConfig = Field(default_factory=PoseConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    zones: list[ZoneConfig] = Field(
        default_factory=list, description="areas of the image: rest (bed, sofa) and ignore (TV, mirror, poster)"
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    debug: DebugConfig = Field(default_factory=DebugConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    privacy: Literal["off", "skeleton"] = Field(
        "off",
        description="skeleton: the stream, snapshots, clips and MQTT "
        "images show only skeletons and boxes on a plain "
        "background; no camera image is ever encoded",
    )

    @field_validator("privacy", mode="before")
    @classmethod
    def _privacy_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("cameras", mode="before")
    @classmethod
    def _bare_camera(cls, value: object) -> object:
        # `hall:` with nothing under it is a camera with every default; a room number (`101:`) is a name too
        if not isinstance(value, dict):
            return value
        return {(str(k) if type(k) is int else k): ({} if v is None else v) for k, v in value.items()}

    @model_validator(mode="after")
    def _camera_setup(self) -> "Config":
        # The loader reports every camera problem itself (camera_problems); this refuses a Config built in code.
        problems = camera_problems(self.model_dump(exclude_unset=True))
        if problems:
            loc, message = problems[0]
            raise PydanticCustomError(
                "camera_setup", "{where}: {message}", {"where": ".".join(str(p) for p in loc), "message": message}
            )
        return self
