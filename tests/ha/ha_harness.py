"""fallwatch against a real Home Assistant: the phases of `make ha-test` (started by tests/ha/ha_test.sh, which
builds the root filesystem Home Assistant runs in). Run with fallwatch's venv; prints each phase's time and exits
non-zero on the first failure.

What is real: mosquitto, Home Assistant (its MQTT integration set up through its config flow, onboarding, the
companion-app registration and webhooks a phone uses, the blueprint and an automation made from it through the
automation editor's API), fallwatch's ``MqttPublisher`` (discovery, states, events, commands). A phone is two HTTP
ends: its push relay (a local server that records what Home Assistant pushes: the notification a phone would
show) and its action button (the webhook call the companion app makes when "I'm on my way" is tapped).
fallwatch's alarm lifecycle (closing the alarm and publishing ``resolved``) is not part of ``MqttPublisher``: the
harness answers the commands it receives with the ``resolved`` event the alarm contract specifies, and checks the
commands are exactly the contract's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: conftest (Mosquitto), testnet, waiting
sys.path.append(str(HERE.parent / "mqtt"))  # mqtt_testlib (Sub, make_event); after tests/, whose conftest is ours
from conftest import Mosquitto  # noqa: E402
from fallwatch.config.schema import MqttConfig  # noqa: E402
from fallwatch.daemon.mqtt.publisher import MqttPublisher  # noqa: E402
from mqtt_testlib import Sub, make_event, status_figures  # noqa: E402
from testnet import free_port  # noqa: E402
from waiting import wait_until  # noqa: E402

DEVICE = "testdev"
PREFIX = f"fallwatch/{DEVICE}"
CAMERAS = ["living", "bed_room"]
OWNER = "Ada Lovelace"  # the Home Assistant user (and person) whose phones answer
ESCALATE_S = 4  # the blueprint's "escalate after", short for the test
SLOW = 60.0  # seconds: Home Assistant on 2 busy cores can take this long to react


class Failed(Exception):
    pass


def check(condition: object, what: str) -> None:
    if not condition:
        raise Failed(what)


class PushRelay:
    """What Home Assistant's companion-app notify pushes (to the phone's push_url), recorded per push token."""

    def __init__(self) -> None:
        self.pushes: list[dict[str, Any]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                relay.pushes.append(json.loads(body))
                reply = b"{}"
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, token: str, where: Callable[[dict], bool] = lambda p: True) -> list[dict]:
        return [p for p in list(self.pushes) if p.get("push_token") == token and where(p)]

    def close(self) -> None:
        self.server.shutdown()


class HomeAssistant:
    """The REST API of a Home Assistant started by ``command`` (in the chroot) with the config folder ``config``."""

    def __init__(self, command: str, config: Path, port: int, log_file: Path):
        self.base = f"http://127.0.0.1:{port}"
        self.config = config
        self.token: Optional[str] = None
        self.log_file = log_file
        self.proc = subprocess.Popen(
            shlex.split(command), stdout=open(log_file, "wb"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def request(self, method: str, path: str, body: Any = None, *, form: bool = False, auth: bool = True) -> Any:
        data = None
        headers = {}
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise Failed(f"{method} {path}: HTTP {exc.code} {exc.read().decode()[:300]}") from None
        return json.loads(text) if text.strip() else None

    def render(self, text: str) -> str:
        """A template rendered by Home Assistant (the API answers text, not JSON)."""
        req = urllib.request.Request(
            self.base + "/api/template",
            data=json.dumps({"template": text}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise Failed(f"template {text!r}: HTTP {exc.code} {exc.read().decode()[:300]}") from None

    def state(self, entity_id: str) -> Optional[dict]:
        try:
            return self.request("GET", f"/api/states/{entity_id}")
        except Failed as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    def wait_state(self, entity_id: str, predicate: Callable[[Optional[dict]], bool], what: str) -> dict:
        seen: list[Optional[dict]] = []

        def ok() -> bool:
            seen.append(self.state(entity_id))
            return predicate(seen[-1])

        check(wait_until(ok, SLOW, step=0.3), f"{entity_id}: {what}; last seen {seen[-1] if seen else None}")
        return seen[-1] or {}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def write_config(config: Path, port: int, blueprint: Path) -> None:
    """A small Home Assistant: the HTTP API, onboarding, config editors, automations, the companion app, MQTT.
    A new one each run (the root filesystem is reused): no user, no integration, no registry left from before."""
    shutil.rmtree(config, ignore_errors=True)
    config.mkdir(parents=True)
    (config / "configuration.yaml").write_text(
        f"""homeassistant:
  name: fallwatch test home
  time_zone: UTC
  unit_system: metric
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
onboarding:
config:
person:
mobile_app:
automation: !include automations.yaml
logger:
  default: warning
  logs:
    homeassistant.components.automation: info
    homeassistant.components.mqtt.discovery: info
"""
    )
    (config / "automations.yaml").write_text("[]\n")
    target = config / "blueprints" / "automation" / "fallwatch"
    target.mkdir(parents=True, exist_ok=True)
    (target / blueprint.name).write_text(blueprint.read_text())


def entity_ids(camera: str) -> dict[str, str]:
    owner = f"fallwatch_{DEVICE}_{camera}"
    return {
        "fall": f"binary_sensor.{owner}_fall",
        "person_down": f"binary_sensor.{owner}_person_down",
        "persons": f"sensor.{owner}_persons",
        "alert": f"event.{owner}_alert",
        "ack": f"button.{owner}_ack",
        "false_alarm": f"button.{owner}_false_alarm",
    }


def fold(name: str) -> str:
    """An area name as Home Assistant compares them (case and spaces ignored), and a camera name likewise."""
    return "".join(c for c in name.casefold() if c not in " _-")


DEVICE_ENTITIES = {"fps": f"sensor.fallwatch_{DEVICE}_fps", "backend": f"sensor.fallwatch_{DEVICE}_backend"}
DEVICE_CLASSES = {"fall": "safety", "person_down": "safety"}


class Harness:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.root = Path(args.root)
        self.config = self.root / "tmp" / "ha-config"
        self.log_dir = Path(args.log_dir)
        self.times: list[tuple[str, float]] = []
        self.broker: Optional[Mosquitto] = None
        self.ha: Optional[HomeAssistant] = None
        self.pub: Optional[MqttPublisher] = None
        self.relay = PushRelay()
        self.commands: Optional[Sub] = None
        self.phones: dict[str, dict[str, str]] = {}  # name -> webhook_id, token, device_id

    # ------------------------------------------------------------------------------------------------ running
    def run(self) -> int:
        phases = [
            ("start mosquitto and Home Assistant", self.start),
            ("onboarding (owner, token)", self.onboard),
            ("MQTT integration (config flow)", self.setup_mqtt),
            ("two phones (companion-app registration)", self.register_phones),
            ("automation from the blueprint", self.create_automation),
            ("discovery: entities, device classes, devices, areas", self.discovery),
            ("fall: binary sensor, event entity, critical notification", self.fall),
            ("phone: I'm on my way -> ack command -> resolved notice", self.phone_ack),
            ("nobody answers: escalation -> false alarm", self.escalation),
            ("HA buttons: contract payloads, resolved closes the wait", self.buttons),
            ("a test event: a plain notification per camera", self.test_event),
            ("a camera removed: its entities and device go", self.camera_removed),
            ("fallwatch run on a fall clip: HA's button closes the real alarm", self.real_daemon),
        ]
        failed = None
        try:
            for name, phase in phases:
                t0 = time.monotonic()
                print(f"[ha-test] {name} ...", flush=True)
                skipped = phase()  # a reason, or None
                took = time.monotonic() - t0
                self.times.append((name + (" (skipped)" if skipped else ""), took))
                print(f"[ha-test] {name}: {'skipped: ' + skipped if skipped else 'ok'} ({took:.1f} s)", flush=True)
        except Failed as exc:
            failed = f"{name}: {exc}"
        except Exception as exc:  # a harness bug is a failure too, with its trace
            import traceback

            traceback.print_exc()
            failed = f"{name}: {type(exc).__name__}: {exc}"
        finally:
            self.close()
        print("[ha-test] phase times (s):")
        for name, took in self.times:
            print(f"[ha-test]   {took:7.1f}  {name}")
        if failed:
            print(f"[ha-test] FAILED: {failed}", file=sys.stderr)
            if self.ha:
                print(f"[ha-test] hass.log, last lines:\n{self.ha.log_tail()}", file=sys.stderr)
            return 1
        print(f"[ha-test] passed: {len(self.times)} phases, {sum(t for _, t in self.times):.1f} s")
        return 0

    def close(self) -> None:
        if self.pub:
            self.pub.stop()
        if self.commands:
            self.commands.close()
        if self.ha:
            self.ha.stop()
        if self.broker:
            self.broker.stop()
        self.relay.close()

    # ------------------------------------------------------------------------------------------------- phases
    def start(self) -> None:
        self.broker = Mosquitto(self.log_dir).start()
        port = free_port()
        write_config(self.config, port, Path(self.args.blueprint))
        self.ha = HomeAssistant(self.args.hass, self.config, port, self.log_dir / "hass.log")

        def up() -> bool:
            check(self.ha is not None and self.ha.alive(), "hass exited")
            try:
                return isinstance(self.ha.request("GET", "/api/onboarding", auth=False), list)  # type: ignore[union-attr]
            except (OSError, Failed):
                return False

        check(wait_until(up, 300, step=0.5), "Home Assistant's API did not come up within 300 s")

    def onboard(self) -> None:
        ha = self.ha
        assert ha is not None
        client_id = ha.base + "/"
        user = ha.request(
            "POST",
            "/api/onboarding/users",
            {"client_id": client_id, "name": OWNER, "username": "ada", "password": "fallwatch-test", "language": "en"},
            auth=False,
        )
        token = ha.request(
            "POST",
            "/auth/token",
            {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id},
            form=True,
            auth=False,
        )
        ha.token = token["access_token"]
        check(ha.request("GET", "/api/")["message"] == "API running.", "the API does not answer with the token")
        # the API answers before every integration is set up: wait for the start to finish
        check(
            wait_until(lambda: ha.request("GET", "/api/config")["state"] == "RUNNING", 300, step=0.5),
            "Home Assistant did not finish starting in 300 s",
        )
        loaded = set(ha.request("GET", "/api/config")["components"])
        missing = {"mobile_app", "automation", "person", "config"} - loaded
        check(not missing, f"integrations not set up: {missing}")

    def setup_mqtt(self) -> None:
        ha = self.ha
        assert ha is not None and self.broker is not None
        flow = ha.request(
            "POST", "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False}
        )
        check(flow.get("step_id") == "broker", f"the MQTT flow asks for {flow}")
        done = ha.request(
            "POST",
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": "127.0.0.1", "port": self.broker.port},
        )
        check(done.get("type") == "create_entry", f"the MQTT flow ended with {done}")
        entries = ha.request("GET", "/api/config/config_entries/entry?domain=mqtt")
        check(wait_until(lambda: self._mqtt_loaded(), SLOW, step=0.3), f"MQTT entry not loaded: {entries}")
        # the commands Home Assistant sends to fallwatch, as fallwatch receives them
        self.commands = Sub(self.broker.port, [f"{PREFIX}/set"])

    def _mqtt_loaded(self) -> bool:
        assert self.ha is not None
        entries = self.ha.request("GET", "/api/config/config_entries/entry?domain=mqtt")
        return bool(entries) and entries[0]["state"] == "loaded"

    def register_phones(self) -> None:
        ha = self.ha
        assert ha is not None
        for name in ("Ada phone", "Bob phone"):
            token = name.split()[0].lower() + "-push-token"
            reg = ha.request(
                "POST",
                "/api/mobile_app/registrations",
                {
                    "device_id": token + "-device",
                    "app_id": "io.fallwatch.test",
                    "app_name": "fallwatch test phone",
                    "app_version": "1.0",
                    "device_name": name,
                    "manufacturer": "fallwatch",
                    "model": "test",
                    "os_name": "Android",
                    "os_version": "14",
                    "supports_encryption": False,
                    "app_data": {"push_token": token, "push_url": self.relay.url},
                },
            )
            self.phones[name] = {"webhook_id": reg["webhook_id"], "token": token}
        for name, phone in self.phones.items():
            device = ha.render(f"{{{{ device_id({json.dumps(name)}) }}}}").strip()
            check(device and device != "None", f"no device for the phone {name}")
            phone["device_id"] = device
            service = "mobile_app_" + name.lower().replace(" ", "_")
            check(wait_until(lambda s=service: self._has_notify(s), SLOW), f"no notify.{service}")

    def _has_notify(self, service: str) -> bool:
        assert self.ha is not None
        domains = {d["domain"]: d["services"] for d in self.ha.request("GET", "/api/services")}
        return service in domains.get("notify", {})

    def create_automation(self) -> None:
        ha = self.ha
        assert ha is not None
        result = ha.request(
            "POST",
            "/api/config/automation/config/fallwatch_alarm_test",
            {
                "alias": "fallwatch alarm",
                "description": "",
                "use_blueprint": {
                    "path": "fallwatch/fallwatch_alarm.yaml",
                    "input": {
                        "topic_prefix": "fallwatch/+",
                        "first_contacts": [self.phones["Ada phone"]["device_id"]],
                        "next_contacts": [self.phones["Bob phone"]["device_id"]],
                        "escalate_after": {"hours": 0, "minutes": 0, "seconds": ESCALATE_S},
                    },
                },
            },
        )
        check(result == {"result": "ok"}, f"the automation editor answered {result}")
        ha.wait_state("automation.fallwatch_alarm", lambda s: bool(s) and s["state"] == "on", "not on")

    def discovery(self) -> None:
        ha = self.ha
        assert ha is not None and self.broker is not None
        cfg = MqttConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": self.broker.port,
                "device_id": DEVICE,
                "state_dir": str(self.log_dir / "fallwatch-state"),
                "reconnect_max_s": 1,
                "heartbeat_s": 5,
            }
        )
        self.cfg = cfg
        status = {"backend": "cpu", "camera": "ok", "fps": 14.5, "persons": 0, "dropped_frames": 0, "state": "ok"}
        figures = status_figures(CAMERAS[0], "0.0-hatest", status)
        self.pub = MqttPublisher(cfg, camera=CAMERAS[0], cameras=CAMERAS, version="0.0-hatest", figures=figures)
        self.pub.start()
        for camera in CAMERAS:
            self.pub.set_state({"state": "ok", "persons": 0}, camera=camera)
        for camera in CAMERAS:
            ids = entity_ids(camera)
            for key, entity_id in ids.items():
                state = ha.wait_state(entity_id, lambda s: s is not None and s["state"] != "unavailable", "missing")
                if key in DEVICE_CLASSES:
                    check(
                        state["attributes"].get("device_class") == DEVICE_CLASSES[key],
                        f"{entity_id}: device_class {state['attributes'].get('device_class')}",
                    )
            alert = ha.state(ids["alert"]) or {}
            types = set(alert.get("attributes", {}).get("event_types", []))
            check({"fall", "person_down", "reminder", "resolved"} <= types, f"{ids['alert']}: event_types {types}")
            ha.wait_state(ids["fall"], lambda s: bool(s) and s["state"] == "off", "not off while the state is ok")
            # one device per camera, in its room's area, under the fallwatch device
            info = json.loads(
                ha.render(
                    f"{{% set d = device_id('{ids['fall']}') %}}"
                    "{{ {'device': device_attr(d, 'name'), 'area': area_name(d),"
                    " 'via': device_attr(d, 'via_device_id'), 'entities': device_entities(d) | sort,"
                    f" 'daemon': device_id('{DEVICE_ENTITIES['fps']}')}} | to_json }}}}"
                )
            )
            # Home Assistant matches a suggested area to an existing one ignoring case and spaces: onboarding made
            # "Bedroom", which "Bed room" joins; "Living" is new beside onboarding's "Living Room"
            check(info["device"] == f"fallwatch {DEVICE} {camera}", f"device {info}")
            check(
                info["area"] and fold(info["area"]) == fold(camera),
                f"{camera}: area {info['area']!r}, expected the area {camera.replace('_', ' ').capitalize()!r}",
            )
            check(info["via"] and info["via"] == info["daemon"], f"{camera}: via_device {info}")
            check(sorted(ids.values()) == info["entities"], f"{camera}: entities {info['entities']}")
        for entity_id in DEVICE_ENTITIES.values():
            ha.wait_state(entity_id, lambda s: s is not None and s["state"] not in ("unavailable", "unknown"), "empty")

    def fall(self) -> None:
        ha = self.ha
        assert ha is not None and self.pub is not None
        ids = entity_ids("living")
        before = (ha.state(ids["alert"]) or {}).get("state")
        event = make_event("fall")
        self.pub.set_state({"state": "fall", "persons": 1}, camera="living")
        self.pub.publish_event(event, camera="living")
        self.living_fall = event
        ha.wait_state(ids["fall"], lambda s: bool(s) and s["state"] == "on", "not on after the fall")
        alert = ha.wait_state(
            ids["alert"],
            lambda s: bool(s) and s["state"] != before and s["attributes"].get("event_type") == "fall",
            "did not fire a fall",
        )
        check(alert["attributes"].get("id") == event["id"], f"event entity id {alert['attributes']}")
        push = self._push("ada", event["id"], "the fall's notification")
        data = push["data"]
        check(push["title"] == "Fall: living", f"title {push['title']!r}")
        check(push["message"].endswith("(camera: living)."), f"message {push['message']!r}")
        actions = {a["action"]: a["title"] for a in data["actions"]}
        check(
            actions
            == {f"FALLWATCH_ACK_{event['id']}": "I'm on my way", f"FALLWATCH_FALSE_{event['id']}": "False alarm"},
            f"actions {actions}",
        )
        check(data["push"]["interruption-level"] == "critical" and data["channel"] == "alarm_stream", f"{data}")
        check(not self.relay.to("bob-push-token"), "the next contact was told before the escalation time")

    def phone_ack(self) -> None:
        ha = self.ha
        assert ha is not None and self.commands is not None and self.pub is not None
        event = self.living_fall
        self._tap("Ada phone", f"FALLWATCH_ACK_{event['id']}")
        command = self._command(lambda c: c.get("ack") == event["id"])
        check(command == {"ack": event["id"], "by": OWNER}, f"command {command}")
        # fallwatch closes the alarm (the alarm contract); the blueprint tells everyone notified
        self._resolved(event, "living", "ack", OWNER)
        push = self._push("ada", event["id"], "the resolved notice", title="Resolved: living")
        check(f"{OWNER} is on the way" in push["message"], f"resolved notice {push['message']!r}")
        check("actions" not in push["data"] and push["data"]["tag"] == f"fallwatch-{event['id']}", f"{push['data']}")
        self.pub.set_state({"state": "ok", "persons": 1}, camera="living")

    def escalation(self) -> None:
        assert self.pub is not None
        event = make_event("person_down")
        t0 = time.monotonic()
        self.pub.set_state({"state": "person_down", "persons": 1}, camera="bed_room")
        self.pub.publish_event(event, camera="bed_room")
        first = self._push("ada", event["id"], "the first contact's notification")
        check(first["title"] == "Person down: bed room", f"title {first['title']!r}")
        bob = self._push("bob", event["id"], "the escalation to the next contact")
        waited = time.monotonic() - t0
        check(waited >= ESCALATE_S - 0.5, f"escalated after {waited:.1f} s, before {ESCALATE_S} s")
        self._tap("Bob phone", f"FALLWATCH_FALSE_{event['id']}")
        command = self._command(lambda c: c.get("false_alarm") == event["id"])
        check(command == {"false_alarm": event["id"], "by": OWNER}, f"command {command}")
        self._resolved(event, "bed_room", "false_alarm", OWNER)
        for token in ("ada", "bob"):
            push = self._push(token, event["id"], f"the resolved notice to {token}", title="Resolved: bed room")
            check("a false alarm" in push["message"], f"resolved notice {push['message']!r}")
        check(bob["data"]["actions"], "the escalated notification has no actions")
        self.pub.set_state({"state": "ok", "persons": 1}, camera="bed_room")

    def buttons(self) -> None:
        ha = self.ha
        assert ha is not None and self.pub is not None
        event = make_event("fall")
        self.pub.publish_event(event, camera="living")
        self._push("ada", event["id"], "the second fall's notification")
        ids = entity_ids("living")
        for key in ("false_alarm", "ack"):
            ha.request("POST", "/api/services/button/press", {"entity_id": ids[key]})
            command = self._command(lambda c, key=key: key in c and c[key] == "all")
            # the alarm contract, exactly
            check(command == {key: "all", "camera": "living", "by": "home-assistant"}, f"{key} button sent {command}")
        # fallwatch closes the open alarm by the button: the blueprint's wait ends on `resolved`, everyone is told
        self._resolved(event, "living", "ack", "home-assistant")
        push = self._push("ada", event["id"], "the resolved notice after the button", title="Resolved: living")
        check("home-assistant is on the way" in push["message"], f"resolved notice {push['message']!r}")
        check(not self.relay.to("bob-push-token", lambda p: event["id"] in json.dumps(p)), "bob was told")

    def test_event(self) -> None:
        """{"test": true} on <prefix>/set: fallwatch's test event reaches the first contact, without ringing."""
        assert self.broker is not None
        sender = Sub(self.broker.port, [f"{PREFIX}/event"])
        try:
            sender.client.publish(f"{PREFIX}/set", json.dumps({"test": True}), qos=1)
            for camera in CAMERAS:
                title = f"fallwatch test ({camera.replace('_', ' ')})"
                check(
                    wait_until(lambda t=title: self.relay.to("ada-push-token", lambda p: p.get("title") == t), SLOW),
                    f"no test notification {title!r}",
                )
                push = self.relay.to("ada-push-token", lambda p, t=title: p.get("title") == t)[-1]
                check("actions" not in push.get("data", {}) and "push" not in push.get("data", {}), f"{push}")
            check(not self.relay.to("bob-push-token", lambda p: "test" in p.get("title", "")), "bob got a test")
        finally:
            sender.close()

    def camera_removed(self) -> None:
        ha = self.ha
        assert ha is not None and self.pub is not None
        gone = entity_ids("bed_room")
        self.pub.reconfigure(self.cfg, cameras=["living"])
        for entity_id in gone.values():
            ha.wait_state(entity_id, lambda s: s is None, "still there after its camera was removed")
        check(
            wait_until(
                lambda: ha.render(f"{{{{ device_id('fallwatch {DEVICE} bed_room') }}}}").strip() == "None", SLOW
            ),
            "the removed camera's device stays",
        )
        for entity_id in entity_ids("living").values():
            check(ha.state(entity_id) is not None, f"{entity_id} went with the other camera")

    def real_daemon(self) -> Optional[str]:
        """The daemon itself (`fallwatch run` on a dev fall clip, looped), with its alarms: the fall reaches the
        phone, Home Assistant's "Acknowledge alarm" button reaches fallwatch, which closes the alarm and publishes
        `resolved`, which ends the blueprint's wait and tells the phone."""
        ha = self.ha
        assert ha is not None and self.broker is not None
        if importlib.util.find_spec("fallwatch.daemon.alarms.open_alarms") is None:
            return "this fallwatch has no alarms yet (daemon/alarms/open_alarms.py)"
        clip = Path(os.environ.get("FALLWATCH_DATA_DIR", HERE.parents[2] / "shared" / "data"))
        clip = clip / "gmdcsa24-dev" / "Subject 1" / "Fall" / "13.mp4"  # the shortest dev fall clip (4.3 s)
        check(clip.is_file(), f"no clip {clip} (set FALLWATCH_DATA_DIR)")
        config = self.log_dir / "fallwatch.yaml"
        config.write_text(
            json.dumps(
                {
                    "camera": {"source": str(clip), "loop": True},
                    "mqtt": {
                        "host": "127.0.0.1",
                        "port": self.broker.port,
                        "device_id": "pi",
                        "state_dir": str(self.log_dir / "daemon-state"),
                        "heartbeat_s": 5,
                    },
                    "debug": {"enabled": False},
                }
            )
        )
        events = Sub(self.broker.port, ["fallwatch/pi/event"])
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "fallwatch"), "run", "--config", str(config)],
            stdout=open(self.log_dir / "fallwatch.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:

            def first(kind: str, **fields: Any) -> Optional[dict]:
                for payload in events.on("fallwatch/pi/event"):
                    event = json.loads(payload)
                    if event.get("event") == kind and all(event.get(k) == v for k, v in fields.items()):
                        return event
                return None

            check(wait_until(lambda: first("fall"), 180, step=0.5), "fallwatch run published no fall in 180 s")
            fall = first("fall")
            assert fall is not None
            self._push("ada", fall["id"], "the daemon's fall notification")
            ha.wait_state("button.fallwatch_pi_ack", lambda s: s is not None and s["state"] != "unavailable", "no")
            ha.request("POST", "/api/services/button/press", {"entity_id": "button.fallwatch_pi_ack"})
            check(
                wait_until(lambda: first("resolved", alarm_id=fall["id"]), SLOW, step=0.3),
                f"fallwatch did not resolve the alarm {fall['id']}: {events.on('fallwatch/pi/event')[-3:]}",
            )
            resolved = first("resolved", alarm_id=fall["id"])
            assert resolved is not None
            check(resolved["reason"] == "ack" and resolved["by"] == "home-assistant", f"resolved {resolved}")
            push = self._push("ada", fall["id"], "the resolved notice", title="Resolved: camera")
            check("home-assistant is on the way" in push["message"], f"resolved notice {push['message']!r}")
        finally:
            daemon.terminate()
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
            events.close()
        return None

    # ------------------------------------------------------------------------------------------------ helpers
    def _push(self, who: str, event_id: str, what: str, title: Optional[str] = None) -> dict:
        """The latest push to ``who``'s phone about ``event_id`` (its tag), with ``title`` if given."""
        token = f"{who}-push-token"

        def found() -> list[dict]:
            return self.relay.to(
                token,
                lambda p: (
                    p.get("data", {}).get("tag") == f"fallwatch-{event_id}"
                    and (title is None or p.get("title") == title)
                ),
            )

        check(wait_until(found, SLOW, step=0.2), f"no push: {what} (pushes to {who}: {self.relay.to(token)})")
        return found()[-1]

    def _tap(self, phone: str, action: str) -> None:
        """What the companion app sends when a notification's action is tapped."""
        assert self.ha is not None
        self.ha.request(
            "POST",
            f"/api/webhook/{self.phones[phone]['webhook_id']}",
            {
                "type": "fire_event",
                "data": {"event_type": "mobile_app_notification_action", "event_data": {"action": action}},
            },
            auth=False,
        )

    def _command(self, predicate: Callable[[dict], bool]) -> dict:
        assert self.commands is not None

        def matching() -> list[dict]:
            out = []
            for payload in self.commands.on(f"{PREFIX}/set"):
                try:
                    command = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(command, dict) and predicate(command):
                    out.append(command)
            return out

        check(
            wait_until(matching, SLOW, step=0.2),
            f"no such command on {PREFIX}/set: {self.commands.on(f'{PREFIX}/set')}",
        )
        return matching()[-1]

    def _resolved(self, alarm: dict, camera: str, reason: str, by: str) -> None:
        """fallwatch's `resolved` for the alarm (the alarm contract's event, on the camera's event topic)."""
        assert self.pub is not None
        resolved = make_event("resolved")
        resolved.update({"alarm_id": alarm["id"], "reason": reason, "by": by})
        self.pub.publish_event(resolved, camera=camera)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the root filesystem Home Assistant runs in")
    parser.add_argument("--hass", required=True, help="the command that starts hass -c /tmp/ha-config in it")
    parser.add_argument("--blueprint", required=True, help="the blueprint file to import")
    parser.add_argument("--log-dir", required=True, help="where hass.log, the broker's files and the state go")
    return Harness(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
