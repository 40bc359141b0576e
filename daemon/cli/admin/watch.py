"""`fallwatch watch`: every device and camera on a broker at a glance, for the night shift.

Live: a table (rich) redrawn twice a second, alarms and down devices on top; it rides out broker restarts.
``--once``: collect the retained messages (availability, state, alerts), print one snapshot and exit; with
``--json`` the snapshot is JSON for scripts. The watcher only subscribes, so read-only credentials suffice.
The view itself (parsing, staleness, sorting) is fallwatch.daemon.cli.admin.watch_state, which knows nothing of MQTT.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

import paho.mqtt.client as mqtt
from fallwatch.config.loader import read_secret
from fallwatch.daemon.cli.admin.watch_state import WatchModel, age_text, parse_ts, topic_filters
from paho.mqtt.enums import CallbackAPIVersion

QUIET_S = 0.5  # --once: retained messages come in one burst after the SUBACK; this long without one ends it
CONNECT_TIMEOUT_S = 5.0


class Watcher:
    """The MQTT side: one read-only client feeding a WatchModel under a lock."""

    def __init__(self, args: argparse.Namespace, password: Optional[str]):
        self.args = args
        self.lock = threading.Lock()
        self.model = WatchModel(args.prefix, started_at=time.time(), stale_after=args.stale)
        self.connack = threading.Event()
        self.suback = threading.Event()
        self.refused: Optional[str] = None
        self.denied: list[str] = []  # topic filters the broker's ACL refused
        self.connected = False
        self.last_retained = 0.0  # monotonic time of the last retained message (or of the SUBACK)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fallwatch-watch-{uuid.uuid4().hex[:8]}", clean_session=True
        )
        if args.username:
            client.username_pw_set(args.username, password)
        if args.tls or args.cafile or args.certfile:
            client.tls_set(
                ca_certs=args.cafile, certfile=args.certfile, keyfile=args.keyfile, cert_reqs=ssl.CERT_REQUIRED
            )
            client.tls_insecure_set(args.insecure)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    @property
    def where(self) -> str:
        return f"{self.args.host}:{self.args.port}"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
        else:
            self.connected = True
            client.subscribe([(topic, 1) for topic in topic_filters(self.args.prefix)])
        self.connack.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected = False

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        filters = topic_filters(self.args.prefix)
        # One reason code per filter, in order (the SUBACK answers the one SUBSCRIBE of all of them).
        self.denied = [
            topic for topic, code in zip(filters, reason_codes, strict=True) if getattr(code, "is_failure", False)
        ]
        self.last_retained = time.monotonic()
        self.suback.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.model.apply(msg.topic, msg.payload, time.time())
        if msg.retain:
            self.last_retained = time.monotonic()

    def start(self) -> Optional[str]:
        """Connect and subscribe; a one-line problem when the broker cannot be used."""
        try:
            self.client.connect(self.args.host, self.args.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            return f"cannot reach the MQTT broker {self.where}: {exc}"
        self.client.loop_start()
        if not self.connack.wait(CONNECT_TIMEOUT_S):
            return f"the MQTT broker {self.where} did not answer within {CONNECT_TIMEOUT_S:g} s"
        if self.refused:
            hint = (
                " (check --username and --password/--password-file)"
                if "authori" in self.refused.lower() or "password" in self.refused.lower()
                else ""
            )
            return f"the MQTT broker {self.where} refused the connection: {self.refused}{hint}"
        if not self.suback.wait(CONNECT_TIMEOUT_S):
            return f"the MQTT broker {self.where} did not acknowledge the subscription to {self.args.prefix}/..."
        if self.denied:
            return (
                f"the MQTT broker {self.where} refused the subscription to {', '.join(self.denied)} "
                f"(check its ACL: this user needs read access to {self.args.prefix}/#)"
            )
        return None

    def settle(self, longest: float) -> None:
        """Wait until the retained messages are in: QUIET_S without one, or ``longest`` seconds at most."""
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline and time.monotonic() - self.last_retained < QUIET_S:
            time.sleep(0.05)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return self.model.snapshot(time.time())

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cmd_watch(args: argparse.Namespace) -> int:
    if args.port is None:
        args.port = 8883 if (args.tls or args.cafile or args.certfile) else 1883
    if (args.password is not None or args.password_file) and not args.username:
        print("fallwatch watch: --password/--password-file need --username", file=sys.stderr)
        return 2
    try:
        password = read_secret(args.password, args.password_file) if args.username else None
    except OSError as exc:
        print(f"fallwatch watch: --password-file: cannot read {args.password_file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        watcher = Watcher(args, password)
    except (OSError, ssl.SSLError, ValueError) as exc:  # unreadable or bad certificate files
        print(f"fallwatch watch: TLS: cannot load the certificates ({exc})", file=sys.stderr)
        return 2
    problem = watcher.start()
    if problem:
        watcher.stop()
        print(f"fallwatch watch: {problem}", file=sys.stderr)
        return 1
    try:
        if args.once:
            watcher.settle(args.wait)
            devices = watcher.snapshot()
            if args.json:
                print(json.dumps(snapshot_document(args, devices), indent=2))
            else:
                _console().print(render_table(args, devices, connected=True))
            return 0
        return _live(args, watcher)
    finally:
        watcher.stop()


def snapshot_document(args: argparse.Namespace, devices: list[dict]) -> dict:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"ts": now, "broker": f"{args.host}:{args.port}", "prefix": args.prefix, "devices": devices}


def _console() -> Any:
    """A terminal's own width; into a pipe or a file, wide enough that no device name is cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _live(args: argparse.Namespace, watcher: Watcher) -> int:
    from rich.live import Live

    console = _console()
    try:
        with Live(
            render_table(args, watcher.snapshot(), watcher.connected), console=console, screen=False, auto_refresh=False
        ) as live:
            while True:
                time.sleep(0.5)
                live.update(render_table(args, watcher.snapshot(), watcher.connected), refresh=True)
    except KeyboardInterrupt:
        return 0


def render_table(args: argparse.Namespace, devices: list[dict], connected: bool) -> Any:
    """One row per camera; alarms in red, down devices in bold red, paused alerts in yellow."""
    from rich.table import Table
    from rich.text import Text

    clock = datetime.now().strftime("%H:%M:%S")
    link = "connected" if connected else "[bold red]DISCONNECTED, retrying[/]"
    alarms = sum(d["alarm"] for d in devices)
    down = sum(d["down"] for d in devices)
    title = (
        f"fallwatch on {args.host}:{args.port} ({link}) at {clock}: {len(devices)} device(s), "
        f"{alarms} with a fall, {down} down"
    )
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("device", "camera", "status", "state", "persons", "event", "age", "beat", "alerts", "open alarms"):
        table.add_column(column, no_wrap=column in ("device", "camera", "state"), overflow="fold")
    for device in devices:
        availability = device["down_reason"] or device["availability"] or "?"
        heartbeat = age_text(device["heartbeat_age_s"]) or "-"
        for i, cam in enumerate(device["cameras"] or [_NO_CAMERA]):
            style = "bold white on red" if cam["alarm"] else "bold red" if device["down"] else None
            alerts = device["alerts"] or ""
            table.add_row(
                device["device"] if i == 0 else "",
                cam["camera"] or "-",
                availability if i == 0 else "",
                (cam["state"] or "?").upper() if cam["alarm"] else cam["state"] or "?",
                "" if cam["persons"] is None else str(cam["persons"]),
                cam["last_event"] or "",
                age_text(cam["last_event_age_s"]),
                heartbeat if i == 0 else "",
                Text(alerts, style="bold yellow") if alerts == "OFF" and i == 0 else (alerts if i == 0 else ""),
                open_alarms_text(cam.get("open_alarms") or []),
                style=style,
            )
    if not devices:
        table.caption = f"no device has published under {args.prefix}/ yet"
    return table


def open_alarms_text(alarms: list[dict]) -> str:
    """``fall since 18:03:12, reminder 2``, one line per open alarm (local time)."""
    lines = []
    for a in alarms:
        opened = parse_ts(a.get("opened"))
        since = datetime.fromtimestamp(opened).strftime("%H:%M:%S") if opened is not None else "?"
        level = f", reminder {a['level']}" if a.get("level") else ""
        lines.append(f"{a.get('kind') or 'alarm'} since {since}{level}")
    return "\n".join(lines)


_NO_CAMERA = {
    "camera": None,
    "state": None,
    "persons": None,
    "alarm": False,
    "last_event": None,
    "last_event_age_s": None,
}
