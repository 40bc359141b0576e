"""Loading and validating configuration files: every bad input is one line naming file, line and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fallwatch.config.loader import (
    DEFAULT_CONFIG,
    ConfigError,
    effective_config_yaml,
    load_config,
    parse_config,
    read_secret,
)
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
    assert errors == [
        "fallwatch.yaml:3: camera.colour: unknown key (known keys: source, width, height, fps, "
        "rotate, flip, realtime, loop, reopen_max_s, min_fps, exposure_ms, analogue_gain, "
        "noise_reduction, name)"
    ]


def test_unknown_section(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "log:\n  level: INFO\n\ncamaras:\n  name: hall\n")
    assert errors == [
        "fallwatch.yaml:4: camaras: unknown key (known keys: camera, cameras, pose, rules, zones, mqtt, "
        "debug, alerts, notify, models, log, events, privacy)"
    ]


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
    assert errors_of(tmp_path, "camera:\n  rotate: 45\n") == [
        "fallwatch.yaml:2: camera.rotate: must be 0, 90, 180 or 270"
    ]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "camera:\n  width: 1\n  height: 2\nlog:\n  level: LOUD\n")
    assert errors == [
        "fallwatch.yaml:2: camera.width: must be between 64 and 4096",
        "fallwatch.yaml:3: camera.height: must be between 64 and 4096",
        "fallwatch.yaml:5: log.level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
    ]


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "camera:\n  name: hall\n  width: [640\n  height: 480\n")
    assert len(errors) == 1 and errors[0].startswith("fallwatch.yaml:4: malformed YAML: ")
    errors = errors_of(tmp_path, "camera:\n name: hall\n  width: 640\n")
    assert len(errors) == 1  # libyaml ends it "in this context", PyYAML's Python parser "here"
    assert errors[0].startswith("fallwatch.yaml:3: malformed YAML: mapping values are not allowed "), errors


def test_not_a_mapping(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "- camera\n- pose\n") == [
        "fallwatch.yaml:1: the configuration must be a mapping of sections (camera, pose, ...)"
    ]


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
    path.write_text(
        "mqtt:\n  host: ${FW_TEST_HOST}\n  port: ${FW_TEST_PORT}\n"
        "  topic_prefix: home/${FW_TEST_ROOM}/fallwatch\n  username: cam\n"
        "  password: ${FW_TEST_PASSWORD}\n"
    )
    config = load_config(path)
    assert config.mqtt.host == "broker.lan"
    assert config.mqtt.port == 8883
    assert config.mqtt.topic_prefix == "home/hall/fallwatch"
    assert read_secret(config.mqtt.password, config.mqtt.password_file) == "s3cret pass"


def test_substituted_value_is_still_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_TEST_PORT", "99999")
    assert errors_of(tmp_path, "mqtt:\n  port: ${FW_TEST_PORT}\n") == [
        "fallwatch.yaml:2: mqtt.port: must be between 1 and 65535"
    ]


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
        "fallwatch.yaml:3: rules.window_max_s: must be more than window_min_s"
    ]
    assert errors_of(tmp_path, "debug:\n  bind: 0.0.0.0:8080\n") == [
        "fallwatch.yaml:2: debug.bind: binding to 0.0.0.0 beyond loopback requires username and password"
    ]


def test_error_names_the_file_it_came_from(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "log:\n  level: LOUD\n", name="kitchen.yaml")[0].startswith("kitchen.yaml:2: log.level")


def test_secrets_are_masked_in_the_effective_config() -> None:
    config = parse_config(
        "mqtt:\n  username: cam\n  password: hunter2-very-secret\ndebug:\n  username: admin\n"
        "  password: another-secret\n"
    )
    text = effective_config_yaml(config)
    assert "hunter2-very-secret" not in text and "another-secret" not in text
    assert text.count("'**********'") == 2
    assert "username: cam" in text
    # the masked dump is still YAML of the same shape (with the camera form in use only: camera:, not cameras:)
    import yaml

    assert set(yaml.safe_load(text)) == set(Config.model_fields) - {"cameras"}


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


def test_a_self_referencing_alias_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    # Side door 1: `a: &a [*a]` used to raise RecursionError (a traceback at start, a dead daemon on SIGHUP).
    assert errors_of(tmp_path, "camera:\n  name: hall\na: &a [*a]\n") == [
        "fallwatch.yaml:3: YAML aliases (*a) are not supported in a fallwatch configuration; write the value out"
    ]


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    # Side door 2: eight levels of ten aliases each took gigabytes; now the first alias is refused.
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    errors = errors_of(tmp_path, "\n".join(lines) + "\n")
    assert errors == [
        "fallwatch.yaml:2: YAML aliases (*l0) are not supported in a fallwatch configuration; write the value out"
    ]


def test_an_oversized_or_too_deep_file_is_one_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "camera:\n  name: '" + "x" * (1 << 20) + "'\n")
    assert errors == [f"{tmp_path / 'fallwatch.yaml'}: larger than 1024 KiB; not a fallwatch configuration"]
    errors = errors_of(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")  # libyaml's own limit comes first
    import yaml

    deep = "fallwatch.yaml:1: malformed YAML: exceeded maximum nesting depth"
    assert errors == [deep if yaml.__with_libyaml__ else "fallwatch.yaml: malformed YAML: nested too deeply"]
    errors = errors_of(tmp_path, "a: " + "[" * 40 + "]" * 40 + "\n")  # deeper than any configuration
    assert errors == ["fallwatch.yaml: malformed YAML: nested too deeply"]


def test_only_literal_loopback_addresses_bind_without_auth(tmp_path: Path) -> None:
    # Side door 8: "127." at the start of a host name was taken for loopback, so 127.0.0.1.example.com (which
    # may resolve to anything) served the debug page without a password.
    for host in ("127.0.0.1.example.com", "127.attacker.net", "[::ffff:192.0.2.1]", "0.0.0.0"):
        errors = errors_of(tmp_path, f"debug:\n  bind: '{host}:8080'\n")
        assert errors == [
            f"fallwatch.yaml:2: debug.bind: binding to {host.strip('[]')} beyond loopback requires "
            f"username and password"
        ], errors
    for host in ("127.0.0.1", "127.1.2.3", "[::1]", "localhost"):
        path = tmp_path / "ok.yaml"
        path.write_text(f"debug:\n  bind: '{host}:8080'\n")
        assert load_config(path).debug.bind == f"{host}:8080"


def test_check_config_refuses_what_run_would(tmp_path: Path) -> None:
    # check-config passed files that `run` then refused: every one of these is now a configuration error with
    # file, line and key.
    cases = {
        "pose:\n  detector: yolo\n": "fallwatch.yaml:2: pose.detector: unknown detector model 'yolo' (known: "
        "blazepose_detector, movenet_multipose, ssd_mobilenet_v1, "
        "ssd_mobilenet_v1_coral, ssd_mobilenet_v2)",
        "pose:\n  estimator: ssd_mobilenet_v1\n": "fallwatch.yaml:2: pose.estimator: ssd_mobilenet_v1 is a person "
        "detector, not a estimator (known estimators: blazepose_full, "
        "blazepose_heavy, blazepose_lite, movenet_lightning, "
        "movenet_thunder)",
        "pose:\n  estimator: movenet_lightning_edgetpu\n": "fallwatch.yaml:2: pose.estimator: name the CPU model "
        "(movenet_lightning); the engine picks its Edge TPU "
        "build itself",
        "debug:\n  bind: 127.0.0.1:99999\n": "fallwatch.yaml:2: debug.bind: the port must be between 0 and 65535",
        "mqtt:\n  topic_prefix: home/+/fall\n": "fallwatch.yaml:2: mqtt.topic_prefix: 'home/+/fall' contains an "
        "MQTT wildcard (+ or #) or NUL; a topic to publish to cannot",
        "mqtt:\n  homeassistant:\n    discovery_prefix: 'ha/#'\n": "fallwatch.yaml:3: "
        "mqtt.homeassistant.discovery_prefix: 'ha/#' contains an MQTT wildcard (+ or #) or NUL; a topic to publish "
        "to cannot",
        "mqtt:\n  host: broker\n  password: s3cret\n": "fallwatch.yaml:3: mqtt.password: is set but username is "
        "not (MQTT sends a password only with a user name)",
        "mqtt:\n  tls:\n    enabled: true\n    keyfile: /k.pem\n": "fallwatch.yaml:4: mqtt.tls.keyfile: is set "
        "without certfile (the client certificate it "
        "belongs to)",
        "mqtt:\n  tls:\n    enabled: true\n    ca_certs: /nonexistent/ca.pem\n": "fallwatch.yaml:4: "
        "mqtt.tls.ca_certs: cannot read /nonexistent/ca.pem",
    }
    for text, error in cases.items():
        assert errors_of(tmp_path, text) == [error], text
    empty = tmp_path / "empty_secret"
    empty.write_text("\n")
    assert errors_of(tmp_path, f"mqtt:\n  username: fw\n  password_file: {empty}\n") == [
        f"fallwatch.yaml:3: mqtt.password_file: {empty} is empty"
    ]


def test_tls_files_that_are_not_pem_or_do_not_match(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.fail("openssl is not installed (.ci/run installs it)")
    for n in (1, 2):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=t",
                "-keyout",
                str(tmp_path / f"key{n}.pem"),
                "-out",
                str(tmp_path / f"cert{n}.pem"),
            ],
            check=True,
            capture_output=True,
        )
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    text = (
        f"mqtt:\n  tls:\n    enabled: true\n    ca_certs: {tmp_path / 'junk.pem'}\n"
        f"    certfile: {tmp_path / 'cert1.pem'}\n    keyfile: {tmp_path / 'key2.pem'}\n"
    )
    errors = errors_of(tmp_path, text)
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"fallwatch.yaml:4: mqtt.tls.ca_certs: {tmp_path / 'junk.pem'} holds no usable CA")
    assert errors[1] == "fallwatch.yaml:6: mqtt.tls.keyfile: the key does not belong to the certificate in certfile"
    good = tmp_path / "good.yaml"
    good.write_text(
        f"mqtt:\n  tls:\n    enabled: true\n    ca_certs: {tmp_path / 'cert1.pem'}\n"
        f"    certfile: {tmp_path / 'cert1.pem'}\n    keyfile: {tmp_path / 'key1.pem'}\n"
    )
    assert load_config(good).mqtt.tls.enabled


def test_cross_field_errors_are_reported_beside_the_other_errors_of_their_section(tmp_path: Path) -> None:
    # pydantic skips a section's cross-field check when a key in it is wrong: one run showed only that key.
    errors = errors_of(
        tmp_path,
        "rules:\n  fall_angle_deg: 500\n  window_min_s: 3\n  window_max_s: 2\nmqtt:\n  port: 0\n  password: x\n",
    )
    assert errors == [
        "fallwatch.yaml:2: rules.fall_angle_deg: must be between 10 and 90",
        "fallwatch.yaml:4: rules.window_max_s: must be more than window_min_s",
        "fallwatch.yaml:6: mqtt.port: must be between 1 and 65535",
        "fallwatch.yaml:7: mqtt.password: is set but username is not (MQTT sends a password only with a user name)",
    ]


def test_zone_errors_name_file_line_and_zone(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        "zones:\n"
        "  - name: bed\n"
        "    kind: rest\n"
        "    points: [[0.5, 0.5], [1.2, 0.5], [0.9, 0.9]]\n"
        "  - {name: tv, kind: telly, points: [[0.1, 0.1], [0.2, 0.1]]}\n",
    )
    assert errors == [
        "fallwatch.yaml:4: zones.0.points: point 1 [1.2, 0.5] is outside the image: x and y must be within 0-1",
        "fallwatch.yaml:5: zones.1.kind: must be 'rest' or 'ignore'",
        "fallwatch.yaml:5: zones.1.points: a zone needs at least 3 points, got 2",
    ]
    cfg = parse_config("zones:\n  - {kind: rest, points: [[0, 0.5], [1, 0.5], [1, 1]]}\n")
    assert cfg.zones[0].kind == "rest" and cfg.zones[0].points[1] == (1.0, 0.5)
