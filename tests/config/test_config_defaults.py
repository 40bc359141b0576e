"""The packaged config/fallwatch.yaml and the schema stay in sync: every key present, commented, at its default.

These tests catch a setting added to config/schema.py but not documented in the default file (or the reverse).
"""

from __future__ import annotations

import re
from typing import Iterator

import yaml
from fallwatch.config.loader import DEFAULT_CONFIG, parse_config
from fallwatch.config.schema import Config
from pydantic import BaseModel

SECTIONS = [
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
# Sections the default file shows only as a commented example (they replace another one when used).
COMMENTED_OUT = {"cameras"}


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def leaf_fields(model: type[BaseModel] = Config, path: tuple = ()) -> Iterator[tuple]:
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            yield from leaf_fields(field.annotation, path + (name,))
        else:
            yield path + (name,), field


def key_lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Key path -> 0-based line of the key in the default file."""
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[path + (key.value,)] = key.start_mark.line
            out.update(key_lines(value, path + (key.value,)))
    return out


def test_the_default_file_has_the_sections_in_order() -> None:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert list(data) == [s for s in SECTIONS if s not in COMMENTED_OUT]
    assert list(Config.model_fields) == SECTIONS


def test_every_setting_is_in_the_default_file_with_a_comment() -> None:
    text = DEFAULT_CONFIG.read_text()
    lines = text.splitlines()
    positions = key_lines(yaml.compose(text))
    missing, uncommented = [], []
    for path, _ in leaf_fields():
        if path[0] in COMMENTED_OUT:
            continue  # see test_the_commented_cameras_example_is_valid
        if path not in positions:
            missing.append(".".join(path))
            continue
        i = positions[path]
        own_comment = re.search(r"\s#", lines[i])
        comment_above = i > 0 and lines[i - 1].strip().startswith("#")
        if not (own_comment or comment_above):
            uncommented.append(f"line {i + 1}: {'.'.join(path)}")
    assert not missing, f"settings missing from {DEFAULT_CONFIG.name}: {missing}"
    assert not uncommented, f"settings without a comment in {DEFAULT_CONFIG.name}: {uncommented}"


def test_the_default_file_shows_the_schema_defaults() -> None:
    # "what is shown is the default": the file and the code must not drift apart.
    from_file = parse_config(DEFAULT_CONFIG.read_text(), DEFAULT_CONFIG.name).model_dump()
    defaults = Config().model_dump()
    drift = [".".join(p) for p, _ in leaf_fields() if _get(from_file, p) != _get(defaults, p)]
    assert not drift, f"{DEFAULT_CONFIG.name} differs from the schema defaults at: {drift}"


def _get(data: dict, path: tuple) -> object:
    for part in path:
        data = data[part]
    return data


def commented_example(section: str) -> str:
    """The commented-out ``section:`` block of the default file, uncommented."""
    lines = DEFAULT_CONFIG.read_text().splitlines()
    start = lines.index(f"# {section}:")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("#  "):
            break
        block.append(line)
    return "\n".join(line[2:] for line in block) + "\n"


def test_the_commented_cameras_example_is_valid() -> None:
    from fallwatch.config.cameras import camera_setups

    text = DEFAULT_CONFIG.read_text()
    camera = text[text.index("\ncamera:\n") : text.index("\n# Several cameras")]  # it replaces camera:
    example = text.replace(camera, "\n").replace(commented_example("cameras"), "") + commented_example("cameras")
    setups = camera_setups(parse_config(example, DEFAULT_CONFIG.name))
    assert [s.name for s in setups] == ["living", "bathroom"]
    assert setups[0].rules.down_alert_s == 30 and setups[1].rules.down_alert_s == 60
    assert [z.name for z in setups[0].zones] == ["sofa"] and setups[1].zones == ()


def test_every_setting_has_a_description_in_the_schema() -> None:
    undocumented = [".".join(p) for p, field in leaf_fields() if not field.description]
    assert not undocumented, f"schema fields without a description: {undocumented}"


def test_json_schema_lists_every_section_and_forbids_unknown_keys() -> None:
    schema = Config.model_json_schema()
    assert list(schema["properties"]) == SECTIONS
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        assert definition.get("additionalProperties") is False, name
    pose = schema["$defs"]["PoseConfig"]["properties"]
    assert pose["backend"]["enum"] == ["auto", "edgetpu", "cpu"]
    assert schema["$defs"]["RulesConfig"]["properties"]["fall_angle_deg"]["minimum"] == 10
