"""What can be checked of the Home Assistant files without Home Assistant (`make ha-test` runs the real one): the
blueprint's inputs are declared and used, it publishes the alarm contract's commands, and the test script is
clean and refuses bad arguments before it needs root."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BLUEPRINT = REPO / "homeassistant" / "blueprints" / "automation" / "fallwatch" / "fallwatch_alarm.yaml"
HA_TEST = REPO / "tests" / "ha" / "ha_test.sh"


class _BlueprintLoader(yaml.SafeLoader):
    """YAML with Home Assistant's ``!input name`` tag, read as ("input", name)."""


_BlueprintLoader.add_constructor("!input", lambda loader, node: ("input", loader.construct_scalar(node)))


def _inputs_used(node: object) -> set[str]:
    if isinstance(node, tuple) and node[:1] == ("input",):
        return {node[1]}
    if isinstance(node, dict):
        return set().union(*(_inputs_used(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_inputs_used(v) for v in node))
    return set()


def test_blueprint_declares_every_input_it_uses_and_uses_every_one():
    blueprint = yaml.load(BLUEPRINT.read_text(), Loader=_BlueprintLoader)
    meta = blueprint["blueprint"]
    assert meta["domain"] == "automation"
    declared = set(meta["input"])
    used = _inputs_used({k: v for k, v in blueprint.items() if k != "blueprint"})
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    # optional inputs have a default, so an automation can leave them out
    required = {name for name, spec in meta["input"].items() if "default" not in spec}
    assert required == {"first_contacts"}


def test_blueprint_sends_the_alarm_contract_commands_on_the_device_set_topic():
    text = BLUEPRINT.read_text()
    publish = re.search(r"action: mqtt\.publish\n\s+data:\n\s+topic: (.+)\n\s+payload: (.+)\n", text)
    assert publish, "no mqtt.publish of the answer"
    assert publish.group(1).strip('"') == "{{ command_topic }}"
    assert "'ack' if answer == ack_action else 'false_alarm'" in publish.group(2) and "'by': by" in publish.group(2)
    assert "~ '/set'" in text  # <prefix>/set, the device's command topic
    for event in ("resolved", "fall", "person_down"):
        assert f"'{event}'" in text


def test_ha_test_rejects_unknown_arguments_before_needing_root():
    result = subprocess.run(["bash", str(HA_TEST), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown argument --bogus" in result.stderr


def test_ha_test_shellcheck_clean():
    tool = shutil.which("shellcheck")
    if not tool:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([tool, "-x", "-S", "info", str(HA_TEST)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
