"""Load and validate a YAML configuration file.

Every error is one line naming the file, the line and the key path, e.g.
``fallwatch.yaml:14: rules.fall_angle_deg: must be between 10 and 90``; all errors are reported at once.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .schema import Config, Section, camera_problems

DEFAULT_CONFIG = Path(__file__).with_name("fallwatch.yaml")
SYSTEM_CONFIG = Path("/etc/fallwatch/fallwatch.yaml")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_FILE_KEYS = ("password_file",)
# A configuration is a few kilobytes; a bigger file is a mistake (or an attack on the parser's memory).
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(Exception):
    """A configuration that must not start the daemon; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def default_config_path() -> Path:
    """--config is handled by the caller; then $FALLWATCH_CONFIG, /etc/fallwatch/fallwatch.yaml, the packaged file."""
    env = os.environ.get("FALLWATCH_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else DEFAULT_CONFIG


def load_config(path: Union[str, Path, None] = None) -> Config:
    path = Path(path) if path else default_config_path()
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a fallwatch configuration"])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read configuration file: {exc}"]) from None
    return parse_config(text, path.name)


# libyaml where PyYAML was built with it: ten times faster, and a reload (its own thread) holds the GIL that much
# less. The checks below make composing with it safe.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A configuration is a few hundred values (the packaged one: 235) and nests a few levels; beyond these bounds it is
# refused before anything is built (a 1 MiB file of 16,000 zones took `check-config` 75 s; a reload as long).
MAX_VALUES = 20_000
MAX_DEPTH = 32
MAX_REPORTED = 20  # problems listed; then one line with how many more


class _Refused(Exception):
    def __init__(self, line: int, text: str):
        super().__init__(text)
        self.line, self.text = line, text


def _check_events(text: str) -> None:
    """One pass over the YAML events, before any node is built: YAML aliases (``*name``) are refused (a
    configuration needs none, and they are how a small file expands into gigabytes, an "alias bomb", or refers to
    itself, ``a: &a [*a]``, for ever), and so are more values or deeper nesting than a configuration has."""
    values = depth = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                line,
                f"YAML aliases (*{event.anchor}) are not supported in a fallwatch configuration; write the value out",
            )
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            values += 1
            if values > MAX_VALUES:
                raise _Refused(
                    line, f"more than {MAX_VALUES} values; not a fallwatch configuration (it has a few hundred)"
                )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(0, "malformed YAML: nested too deeply")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_config(text: str, name: str = "<config>") -> Config:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{name}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a fallwatch configuration"])
    try:
        _check_events(text)
        loader = _YAML_LOADER(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError([f"{name}:{exc.line}: {exc.text}" if exc.line else f"{name}: {exc.text}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([f"{name}:{line}: malformed YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: malformed YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: the configuration must be a mapping of sections (camera, pose, ...)"])

    lines: dict[tuple, int] = {}
    errors: list[str] = []
    _record_lines(node, (), lines, name, errors)
    unset: set[tuple] = set()
    data = _substitute_env(data, (), lines, name, errors, unset)
    # Validate whatever else is wrong too, so one run lists every error (a key whose ${VAR} is unset is
    # reported once, for the variable).
    config: Optional[Config] = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found = _format_validation_error(exc, lines, name)
        # pydantic skips a section's cross-field checks when one of its keys is wrong: run them on the rest
        found += _cross_field_errors(Config, data, (), {tuple(e["loc"]) for e in exc.errors()}, lines, name)
        errors.extend(e for loc, e in found if loc not in unset)
    # `cameras:` as a whole (camera: beside it, no camera, one source twice, ...), whatever else is wrong
    errors.extend(
        f"{name}:{_line_of(loc, lines)}: {_dotted(loc)}: {message}"
        for loc, message in camera_problems(data)
        if loc not in unset
    )
    if config is not None:
        errors.extend(_check_secret_files(config, lines, name))
        errors.extend(_check_tls_files(config, lines, name))
    if errors or config is None:
        errors = sorted(errors, key=_error_line) or [f"{name}: not a valid configuration"]  # in file order
        if len(errors) > MAX_REPORTED:  # a bounded report: the log and the terminal stay readable
            errors = errors[:MAX_REPORTED] + [f"{name}: ... and {len(errors) - MAX_REPORTED} more problems"]
        raise ConfigError(errors)
    return config


def _error_line(error: str) -> int:
    match = re.match(r"^[^\n]*?:(\d+): ", error)
    return int(match.group(1)) if match else 0


def _record_lines(node: Any, path: tuple, lines: dict[tuple, int], name: str, errors: list[str]) -> None:
    """Map each key path to the 1-based line where its key stands; a key given twice is an error
    (YAML would silently keep the last one)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = path + (str(key_node.value),)
            line = key_node.start_mark.line + 1
            if key_path in lines:
                errors.append(
                    f"{name}:{line}: {_dotted(key_path)}: duplicate key (first given on line {lines[key_path]})"
                )
            lines[key_path] = line
            _record_lines(value_node, key_path, lines, name, errors)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines, name, errors)


def _line_of(path: tuple, lines: dict[tuple, int]) -> int:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 1


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _substitute_env(value: Any, path: tuple, lines: dict, name: str, errors: list[str], unset: set[tuple]) -> Any:
    """Replace ${VAR} in string values from the environment; an unset variable is an error (its key goes into
    ``unset``)."""
    if isinstance(value, dict):
        return {k: _substitute_env(v, path + (str(k),), lines, name, errors, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, path + (i,), lines, name, errors, unset) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def replace(match: re.Match) -> str:
            var = match.group(1)
            if var not in os.environ:
                errors.append(f"{name}:{_line_of(path, lines)}: {_dotted(path)}: environment variable {var} is not set")
                unset.add(path)
                return ""
            return os.environ[var]

        return _ENV_REF.sub(replace, value)
    return value


def _constraint_text(model: type[BaseModel], loc: tuple) -> Optional[str]:
    """'must be between 10 and 90' style text from the field's own bounds."""
    field, _ = _walk(loc, model)
    if field is None:
        return None
    bounds = {}
    for meta in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(meta, attr, None) is not None:
                bounds[attr] = getattr(meta, attr)
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None and high is not None:
        text = f"must be between {low} and {high}"
        if "gt" in bounds or "lt" in bounds:
            text += (
                " ("
                + ", ".join(
                    f"{'more' if k == 'gt' else 'less'} than {v}" for k, v in bounds.items() if k in ("gt", "lt")
                )
                + ")"
            )
        return text
    return None


def _cross_field_errors(
    model: type[BaseModel], data: Any, loc: tuple, bad: set[tuple], lines: dict, name: str
) -> list[tuple[tuple, str]]:
    """The cross-field errors of each section that also has a wrong key, checked with its wrong keys left out."""
    if not isinstance(data, dict):
        return []
    out = []
    for key, value in data.items():
        sub = _model_at((key,), model)
        if sub is not None:
            out += _cross_field_errors(sub, value, loc + (key,), bad, lines, name)
    wrong = {b[len(loc)] for b in bad if len(b) > len(loc) and b[: len(loc)] == loc}
    if not wrong:
        return out
    rest = {k: v for k, v in data.items() if k in model.model_fields and k not in wrong}
    try:
        model.model_validate(rest)
    except ValidationError as exc:
        for err in exc.errors():
            if not err["loc"]:  # the section's own (cross-field) check
                out += _format_errors([dict(err, loc=loc)], lines, name)
    return out


def _format_validation_error(exc: ValidationError, lines: dict, name: str) -> list[tuple[tuple, str]]:
    """(key path, one-line error) for each problem pydantic found."""
    return _format_errors(exc.errors(), lines, name)


def _format_errors(errors: Any, lines: dict, name: str) -> list[tuple[tuple, str]]:
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "camera_setup":
            continue  # parse_config reports every one of them (schema.camera_problems)
        if loc[-1:] == ("[key]",):  # a key of a mapping (a camera name) is wrong: the key's own line
            loc = loc[:-1]
        blamed = re.match(r"^Value error, (\w+): (.*)$", err["msg"])
        section = _model_at(loc)
        if blamed and section is not None and blamed.group(1) in section.model_fields:
            # a cross-field check of a section that names the key to blame (see schema.Section)
            loc, msg = loc + (blamed.group(1),), blamed.group(2)
        elif kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            hint = parent.key_hints.get(str(loc[-1])) if parent and issubclass(parent, Section) else None
            known = ", ".join(parent.model_fields) if parent else ""
            if hint:
                msg = hint.format(parent=loc[-2] if len(loc) > 1 else "")
            else:
                msg = f"unknown key (known keys: {known})" if known else "unknown key"
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            msg = _constraint_text(Config, loc) or _plain(err["msg"])
        else:
            msg = _plain(err["msg"])
        where = _dotted(loc) if loc else "(top level)"
        out.append((loc, f"{name}:{_line_of(loc, lines)}: {where}: {msg}"))
    return out


def _model_at(loc: tuple, root: type[BaseModel] = Config) -> Optional[type[BaseModel]]:
    _, model = _walk(loc, root)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[Any, Any]:
    """(field, type) that the key path ``loc`` leads to from ``root``, through sections, optional values, the
    keys of a mapping (a camera name) and the items of a list (a zone); (None, None) where it leads nowhere.
    The field is None when the path ends at a mapping key or list item."""
    field: Any = None
    kind: Any = root
    for part in loc:
        kind = _not_none(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            if part not in kind.model_fields:
                return None, None
            field = kind.model_fields[part]
            kind = field.annotation
        elif get_origin(kind) in (dict, list):
            field, kind = None, get_args(kind)[-1]
        else:
            return None, None
    return field, _not_none(kind)


def _not_none(kind: Any) -> Any:
    """X for Optional[X]."""
    args = [a for a in get_args(kind) if a is not type(None)]
    return args[0] if get_origin(kind) is Union and len(args) == 1 else kind


def _plain(msg: str) -> str:
    # pydantic says "Input should be ..."; a configuration key "must be ...".
    msg = msg.replace("Value error, ", "")
    return re.sub(r"^Input should be", "must be", msg)


def _check_secret_files(config: Config, lines: dict, name: str) -> list[str]:
    errors = []
    for section in ("mqtt", "debug"):
        sub = getattr(config, section)
        for key in _SECRET_FILE_KEYS:
            file = getattr(sub, key, None)
            if not file:
                continue
            where = f"{name}:{_line_of((section, key), lines)}: {section}.{key}"
            try:
                secret = Path(file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                errors.append(f"{where}: cannot read {file}")
                continue
            if not secret and section == "mqtt":  # (an empty debug one leaves only the debug page off, logged)
                errors.append(f"{where}: {file} is empty")
    urls_file = config.notify.urls_file
    if urls_file:
        where = f"{name}:{_line_of(('notify', 'urls_file'), lines)}: notify.urls_file"
        try:
            Path(urls_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            errors.append(f"{where}: cannot read {urls_file}")
    return errors


def _check_tls_files(config: Config, lines: dict, name: str) -> list[str]:
    """mqtt.tls files that are unreadable, not PEM, or a key that does not belong to its certificate."""
    tls = config.mqtt.tls
    if not (config.mqtt.enabled and tls.enabled):
        return []

    def error(key: str, text: str) -> str:
        return f"{name}:{_line_of(('mqtt', 'tls', key), lines)}: mqtt.tls.{key}: {text}"

    errors = []
    for key in ("ca_certs", "certfile", "keyfile"):
        file = getattr(tls, key)
        if file and not os.access(file, os.R_OK):
            errors.append(error(key, f"cannot read {file}"))
    if errors:
        return errors
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_certs:
        try:
            context.load_verify_locations(cafile=tls.ca_certs)
        except (ssl.SSLError, ValueError) as exc:
            errors.append(error("ca_certs", f"{tls.ca_certs} holds no usable CA certificate ({exc})"))
    if tls.certfile:
        try:  # a key with a pass phrase is refused, not asked for: the daemon cannot type one
            context.load_cert_chain(tls.certfile, tls.keyfile, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                errors.append(
                    error(
                        "keyfile" if tls.keyfile else "certfile",
                        "the key does not belong to the certificate in certfile",
                    )
                )
            else:
                errors.append(error("certfile", f"cannot load the certificate and key ({exc})"))
    return errors


def read_secret(password: Any, password_file: Optional[str]) -> Optional[str]:
    """The secret from ``password`` (a SecretStr) or, for systemd credentials, from ``password_file``."""
    if password_file:
        return Path(password_file).read_text(encoding="utf-8").strip()
    if password is None:
        return None
    return password.get_secret_value() if hasattr(password, "get_secret_value") else str(password)


def redact_url(text: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://user:***@host/x, so passwords in URLs stay out of output and logs."""
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]*@", r"\1:***@", text, flags=re.IGNORECASE)


def masked_dump(config: Config) -> dict:
    """The configuration as plain data with its secrets masked: SecretStr values and passwords inside URLs.
    Only the camera form in use appears (camera: and zones:, or cameras:), so the dump loads again."""

    def mask(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return redact_url(value) if isinstance(value, str) else value

    unused = {"camera", "zones"} if config.cameras is not None else {"cameras"}
    return mask(config.model_dump(mode="json", exclude=unused))


def effective_config_yaml(config: Config) -> str:
    """The effective configuration as YAML, secrets masked."""
    return yaml.safe_dump(masked_dump(config), sort_keys=False)
