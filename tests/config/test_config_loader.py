"""Loading and validating configuration files: every bad input is one line naming file, line and key."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fallwatch.config.loader import (DEFAULT_CONFIG, ConfigError, effective_config_yaml, load_config, parse_config,
                                     read_secret)
from fallwatch.config.schema import Config


def errors_of(tmp_path: Path, text: str, name: str = "fallwatch.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == "\n".join(err.value.errors)
    for line in err.value.errors:
        assert "\n" not in line
    return err.value.errors


def test_the_default_config_validates() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert isinstance(config, Config)
    assert config.pose.estimator == "movenet_lightning"


def test_an_empty_file_means_all_defaults(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert load_config(tmp_path / "empty.yaml") == Config()


def test_unknown_key_names_file_line_key_and_the_known_keys(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "camera:\n  name: hall\n  colour: red\n")
    assert errors == ["fallwatch.yaml:3: camera.colour: unknown key (known keys: source, name, width, height, fps, "
                      "rotate, flip, realtime, loop, reopen_max_s, min_fps, exposure_ms, analogue_gain, "
                      "noise_reduction)"]


def test_unknown_section(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "log:\n  level: INFO\n\ncameras:\n  name: hall\n")
    assert errors == ["fallwatch.yaml:4: cameras: unknown key (known keys: camera, pose, rules, mqtt, debug, models, "
                      "log)"]


def test_wrong_type(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "mqtt:\n  host: broker\n  tls:\n    insecure: perhaps\n")
    assert len(errors) == 1
    assert errors[0].startswith("fallwatch.yaml:4: mqtt.tls.insecure: must be a valid boolean")
    errors = errors_of(tmp_path, "camera:\n  width: wide\n")
    assert errors[0].startswith("fallwatch.yaml:2: camera.width: must be a valid integer")


def test_out_of_range_value(tmp_path: Path) -> None:
    text = "# my config\n" + "\n" * 11 + "rules:\n  fall_angle_deg: 5\n"  # the key on line 14
    assert errors_of(tmp_path, text) == ["fallwatch.yaml:14: rules.fall_angle_deg: must be between 10 and 90"]


def test_value_not_among_the_choices(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "camera:\n  rotate: 45\n") == ["fallwatch.yaml:2: camera.rotate: must be 0, 90, 180 "
                                                             "or 270"]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "camera:\n  width: 1\n  height: 2\nlog:\n  level: LOUD\n")
    assert errors == ["fallwatch.yaml:2: camera.width: must be between 64 and 4096",
                      "fallwatch.yaml:3: camera.height: must be between 64 and 4096",
                      "fallwatch.yaml:5: log.level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"]


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "camera:\n  name: hall\n  width: [640\n  height: 480\n")
    assert len(errors) == 1 and errors[0].startswith("fallwatch.yaml:4: malformed YAML: ")
    errors = errors_of(tmp_path, "camera:\n name: hall\n  width: 640\n")
    assert errors == ["fallwatch.yaml:3: malformed YAML: mapping values are not allowed here"]


def test_not_a_mapping(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "- camera\n- pose\n") == [
        "fallwatch.yaml:1: the configuration must be a mapping of sections (camera, pose, ...)"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert err.value.errors == [f"{tmp_path / 'nope.yaml'}: configuration file not found"]


def test_unset_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FW_TEST_UNSET", raising=False)
    errors = errors_of(tmp_path, "mqtt:\n  username: cam\n  password: ${FW_TEST_UNSET}\n")
    assert errors == ["fallwatch.yaml:3: mqtt.password: environment variable FW_TEST_UNSET is not set"]


def test_environment_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_TEST_HOST", "broker.lan")
    monkeypatch.setenv("FW_TEST_PORT", "8883")
    monkeypatch.setenv("FW_TEST_ROOM", "hall")
    monkeypatch.setenv("FW_TEST_PASSWORD", "s3cret pass")
    path = tmp_path / "fallwatch.yaml"
    path.write_text("mqtt:\n  host: ${FW_TEST_HOST}\n  port: ${FW_TEST_PORT}\n"
                    "  topic_prefix: home/${FW_TEST_ROOM}/fallwatch\n  password: ${FW_TEST_PASSWORD}\n")
    config = load_config(path)
    assert config.mqtt.host == "broker.lan"
    assert config.mqtt.port == 8883
    assert config.mqtt.topic_prefix == "home/hall/fallwatch"
    assert read_secret(config.mqtt.password, config.mqtt.password_file) == "s3cret pass"


def test_substituted_value_is_still_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_TEST_PORT", "99999")
    assert errors_of(tmp_path, "mqtt:\n  port: ${FW_TEST_PORT}\n") == [
        "fallwatch.yaml:2: mqtt.port: must be between 1 and 65535"]


def test_password_file_is_read_as_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "credentials" / "mqtt_password"
    secret.parent.mkdir()
    secret.write_text("from-systemd-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secret.parent))
    path = tmp_path / "fallwatch.yaml"
    path.write_text("mqtt:\n  username: cam\n  password_file: ${CREDENTIALS_DIRECTORY}/mqtt_password\n")
    config = load_config(path)
    assert config.mqtt.password_file == str(secret)
    assert read_secret(config.mqtt.password, config.mqtt.password_file) == "from-systemd-credential"


def test_unreadable_password_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    errors = errors_of(tmp_path, f"debug:\n  username: admin\n  password_file: {missing}\n")
    assert errors == [f"fallwatch.yaml:3: debug.password_file: cannot read {missing}"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_password_file_without_permission(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    errors = errors_of(tmp_path, f"mqtt:\n  password_file: {secret}\n")
    assert errors == [f"fallwatch.yaml:2: mqtt.password_file: cannot read {secret}"]


def test_password_and_password_file_together(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    errors = errors_of(tmp_path, f"mqtt:\n  password: a\n  password_file: {secret}\n")
    assert errors == ["fallwatch.yaml:3: mqtt.password_file: set password or password_file, not both"]


def test_cross_field_rules(tmp_path: Path) -> None:
    # a cross-field check names the key it blames, on that key's own line
    assert errors_of(tmp_path, "rules:\n  window_min_s: 3\n  window_max_s: 2\n") == [
        "fallwatch.yaml:3: rules.window_max_s: must be more than window_min_s"]
    assert errors_of(tmp_path, "debug:\n  bind: 0.0.0.0:8080\n") == [
        "fallwatch.yaml:2: debug.bind: binding to 0.0.0.0 beyond loopback requires username and password"]


def test_error_names_the_file_it_came_from(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "log:\n  level: LOUD\n", name="kitchen.yaml")[0].startswith("kitchen.yaml:2: log.level")


def test_secrets_are_masked_in_the_effective_config() -> None:
    config = parse_config("mqtt:\n  username: cam\n  password: hunter2-very-secret\ndebug:\n  username: admin\n"
                          "  password: another-secret\n")
    text = effective_config_yaml(config)
    assert "hunter2-very-secret" not in text and "another-secret" not in text
    assert text.count("'**********'") == 2
    assert "username: cam" in text
    # the masked dump is still YAML of the same shape
    import yaml
    assert set(yaml.safe_load(text)) == set(Config.model_fields)


def test_duplicate_key_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "mqtt:\n  host: a\n  port: 1883\n  host: b\n")
    assert errors == ["fallwatch.yaml:4: mqtt.host: duplicate key (first given on line 2)"]


def test_an_unset_variable_does_not_hide_the_other_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FW_UNSET_PORT", raising=False)
    errors = errors_of(tmp_path, "mqtt:\n  port: ${FW_UNSET_PORT}\nrules:\n  fall_angle_deg: 5\n  foo: 1\n")
    assert errors[0] == "fallwatch.yaml:2: mqtt.port: environment variable FW_UNSET_PORT is not set"
    assert errors[1] == "fallwatch.yaml:4: rules.fall_angle_deg: must be between 10 and 90"
    assert errors[2].startswith("fallwatch.yaml:5: rules.foo: unknown key")
    assert len(errors) == 3  # the port is reported once, for its variable, not again as "not an integer"


def test_passwords_inside_urls_are_masked_in_the_effective_config() -> None:
    config = parse_config("camera:\n  source: rtsp://admin:hunter2@192.0.2.7:554/stream\n")
    text = effective_config_yaml(config)
    assert "hunter2" not in text and "rtsp://admin:***@192.0.2.7:554/stream" in text
    assert config.camera.source == "rtsp://admin:hunter2@192.0.2.7:554/stream"  # the daemon still gets it
