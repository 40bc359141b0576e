"""`fallwatch check-config` and `fallwatch config schema` as subprocesses: output, stderr, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from fallwatch.config.loader import DEFAULT_CONFIG
from fallwatch.config.schema import Config


def fallwatch(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FALLWATCH_CONFIG"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_config_prints_the_effective_default_config() -> None:
    result = fallwatch("check-config", str(DEFAULT_CONFIG))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"# effective configuration of {DEFAULT_CONFIG}")
    assert Config.model_validate(yaml.safe_load(result.stdout)) == Config()


def test_check_config_uses_fallwatch_config_when_no_file_is_given(tmp_path: Path) -> None:
    path = tmp_path / "fallwatch.yaml"
    path.write_text("camera:\n  name: hallway  # the hall camera\n")
    result = fallwatch("check-config", env_extra={"FALLWATCH_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["camera"]["name"] == "hallway"


def test_check_config_masks_secrets_and_substitutes_environment(tmp_path: Path) -> None:
    path = tmp_path / "fallwatch.yaml"
    path.write_text("mqtt:\n  host: ${FW_TEST_BROKER}\n  username: cam\n  password: ${FW_TEST_SECRET}\n")
    result = fallwatch(
        "check-config", str(path), env_extra={"FW_TEST_BROKER": "broker.lan", "FW_TEST_SECRET": "correct-horse-battery"}
    )
    assert result.returncode == 0, result.stderr
    assert "correct-horse-battery" not in result.stdout
    effective = yaml.safe_load(result.stdout)
    assert effective["mqtt"]["host"] == "broker.lan"
    assert effective["mqtt"]["password"] == "**********"


def test_check_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "fallwatch.yaml"
    path.write_text("camera:\n  fps: 0\n  colour: red\nrules:\n  fall_angle_deg: 95\nmqtt:\n  port: none\n")
    result = fallwatch("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("fallwatch.yaml:2: camera.fps: must be between 0 and 120")
    assert lines[1].startswith("fallwatch.yaml:3: camera.colour: unknown key")
    assert lines[2] == "fallwatch.yaml:5: rules.fall_angle_deg: must be between 10 and 90"
    assert lines[3].startswith("fallwatch.yaml:7: mqtt.port: must be a valid integer")


def test_check_config_missing_file_and_malformed_yaml_exit_2(tmp_path: Path) -> None:
    result = fallwatch("check-config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{tmp_path / 'absent.yaml'}: configuration file not found"
    broken = tmp_path / "fallwatch.yaml"
    broken.write_text("pose:\n  backend: [cpu\n")
    result = fallwatch("check-config", str(broken))
    assert result.returncode == 2
    assert result.stderr.startswith("fallwatch.yaml:")
    assert "malformed YAML" in result.stderr and "Traceback" not in result.stderr


def test_check_config_unset_environment_variable_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "fallwatch.yaml"
    path.write_text("mqtt:\n  password: ${FW_TEST_NEVER_SET}\n")
    result = fallwatch("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == "fallwatch.yaml:2: mqtt.password: environment variable FW_TEST_NEVER_SET is not set"


def test_config_schema_prints_the_json_schema() -> None:
    result = fallwatch("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(Config.model_json_schema()))
    assert list(schema["properties"]) == [
        "camera",
        "cameras",
        "pose",
        "rules",
        "zones",
        "mqtt",
        "debug",
        "alerts",
        "notify",
        "models",
        "log",
        "events",
        "privacy",
    ]
    cameras = schema["properties"]["cameras"]["anyOf"][0]
    assert cameras["patternProperties"] == {r"^[a-z0-9][a-z0-9_-]{0,31}$": {"$ref": "#/$defs/CameraEntry"}}
    entry = schema["$defs"]["CameraEntry"]["properties"]
    assert "name" not in entry and entry["rules"]["$ref"] == "#/$defs/RulesOverrides"
    assert schema["$defs"]["RulesOverrides"]["properties"]["down_alert_s"]["anyOf"][0]["exclusiveMinimum"] == 0


def test_check_config_refuses_an_alias_bomb_at_once_saying_why(tmp_path: Path) -> None:
    # Side door 2: check-config ran past 30 s at 2.9 GB on this file.
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    result = fallwatch("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        "bomb.yaml:2: YAML aliases (*l0) are not supported in a fallwatch configuration; write the value out\n"
    )


def test_config_schema_into_a_closed_pipe_is_quiet() -> None:
    # Side door 8: `fallwatch config schema | head` ended in a BrokenPipeError traceback.
    env = {k: v for k, v in os.environ.items() if k != "FALLWATCH_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fallwatch.daemon.cli.main", "config", "schema"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first write (Python takes far longer to start)
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and stderr == "", stderr


def test_check_config_shows_several_cameras_and_refuses_their_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "fallwatch.yaml"
    path.write_text(
        "rules:\n  down_alert_s: 45\ncameras:\n  living:\n    source: rtsp://u:pw@192.0.2.1/s\n"
        "    rules: {down_alert_s: 30}\n  bathroom:\n    source: v4l2:/dev/video0\n"
    )
    result = fallwatch("check-config", str(path))
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert "camera" not in effective and list(effective["cameras"]) == ["living", "bathroom"]
    assert effective["cameras"]["living"]["source"] == "rtsp://u:***@192.0.2.1/s"
    assert effective["cameras"]["living"]["rules"] == {"down_alert_s": 30} and effective["rules"]["down_alert_s"] == 45
    path.write_text("camera:\n  name: hall\ncameras:\n  Living:\n    name: x\n    rules: {down_alert_s: -1}\n")
    result = fallwatch("check-config", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert [line.split(": ")[0] + ": " + line.split(": ")[1] for line in result.stderr.strip().splitlines()] == [
        "fallwatch.yaml:1: camera",
        "fallwatch.yaml:4: cameras.Living",
        "fallwatch.yaml:5: cameras.Living.name",
        "fallwatch.yaml:6: cameras.Living.rules.down_alert_s",
    ]
