"""The models, the MQTT broker and the debug page's address."""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path
from typing import Any

from fallwatch.config.schema import Config
from fallwatch.daemon.cli.admin.doctor.report import Check

MQTT_TIMEOUT_S = 5.0


def check_models(cfg: Config, model_dir: Path, tpu_library: bool) -> Check:
    from fallwatch.pose.fetch import MISMATCH, MISSING, configured_models, model_status
    from fallwatch.pose.models import MODELS

    required, tpu = configured_models(cfg.pose.detector, cfg.pose.estimator, cfg.pose.backend)
    status = {name: model_status(MODELS[name], model_dir) for name in [*required, *tpu]}
    bad = [n for n in required if status[n] in (MISSING, MISMATCH)]
    if bad:
        what = ", ".join(f"{n} ({'missing' if status[n] == MISSING else 'fails its sha256'})" for n in bad)
        return Check("fail", "models", f"in {model_dir}: {what}", "fallwatch models fetch " + " ".join(bad))
    absent = [n for n in tpu if status[n] in (MISSING, MISMATCH)]
    text = f"{', '.join(f'{n} {status[n]}' for n in status)} in {model_dir}"
    if absent and tpu_library:
        return Check(
            "warn",
            "models",
            f"{text}; the Edge TPU builds are not all usable",
            "fallwatch models fetch " + " ".join(absent),
        )
    return Check("ok", "models", text)


def check_mqtt(cfg: Config) -> Check:
    """A real connect with the configured credentials and TLS, CONNACK within MQTT_TIMEOUT_S."""
    m = cfg.mqtt
    if not m.enabled:
        return Check("ok", "mqtt", "disabled (mqtt.enabled: false)")
    where = f"{m.host}:{m.port}" + (" (TLS)" if m.tls.enabled else "") + (f" as {m.username}" if m.username else "")
    try:
        socket.create_connection((m.host, m.port), timeout=MQTT_TIMEOUT_S).close()
    except OSError as exc:
        return Check(
            "fail",
            "mqtt",
            f"cannot reach the broker at {where}: {exc.strerror or exc}",
            "start the broker or correct mqtt.host/mqtt.port",
        )
    import paho.mqtt.client as mqtt
    from fallwatch.daemon.mqtt.link.connection import MqttError, password_of
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    answer: dict[str, Any] = {}

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        answer["rc"] = reason_code
        done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"fallwatch-doctor-{os.getpid()}",
        protocol=mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311,
    )
    client.on_connect = on_connect
    try:
        if m.username:
            client.username_pw_set(m.username, password_of(m))
        if m.tls.enabled:
            import ssl

            client.tls_set(
                ca_certs=m.tls.ca_certs, certfile=m.tls.certfile, keyfile=m.tls.keyfile, cert_reqs=ssl.CERT_REQUIRED
            )
            client.tls_insecure_set(m.tls.insecure)
        client.connect_timeout = MQTT_TIMEOUT_S
        # TCP bounded by connect_timeout; the TLS handshake by the socket timeout paho sets from keepalive
        client.connect(m.host, m.port, keepalive=int(MQTT_TIMEOUT_S))
        client.loop_start()
        answered = done.wait(MQTT_TIMEOUT_S)
    except MqttError as exc:
        return Check("fail", "mqtt", str(exc), "correct the setting it names")
    except (OSError, ValueError) as exc:
        return Check("fail", "mqtt", f"{where}: {exc}", "check mqtt.tls and the broker's certificate")
    finally:
        client.disconnect()
        client.loop_stop()
    if not answered:
        return Check(
            "fail",
            "mqtt",
            f"{where}: no CONNACK within {MQTT_TIMEOUT_S:g} s",
            "is it an MQTT broker on that port (TLS on the TLS port)?",
        )
    rc = answer["rc"]
    if getattr(rc, "is_failure", False):
        return Check(
            "fail", "mqtt", f"{where}: the broker refused the connection ({rc})", "check mqtt.username and the password"
        )
    return Check("ok", "mqtt", f"connected to {where}")


def _listener(port: int, proc: Path) -> str:
    """Which process listens on TCP ``port`` ("python3 (pid 123)"), as far as /proc tells this user."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    for pid_dir in proc.glob("[0-9]*"):
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    comm = (pid_dir / "comm").read_text().strip()
                    return f"{comm} (pid {pid_dir.name})"
        except OSError:
            continue
    return "another process (not visible to this user)"


def check_debug_bind(cfg: Config, proc: Path = Path("/proc")) -> Check:
    d = cfg.debug
    if not d.enabled:
        return Check("ok", "debug bind", "disabled (debug.enabled: false)")
    host, port = d.bind.rsplit(":", 1)
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the debug server does
            s.bind(infos[0][4])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            who = _listener(int(port), proc)
            return Check(
                "warn" if who.startswith("fallwatch") else "fail",
                "debug bind",
                f"{d.bind} is in use by {who}",
                "stop it or set debug.bind to a free port"
                if not who.startswith("fallwatch")
                else "the daemon is probably running already (systemctl status fallwatch)",
            )
        return Check("fail", "debug bind", f"cannot bind {d.bind}: {exc.strerror or exc}", "correct debug.bind")
    return Check("ok", "debug bind", f"{d.bind} is free")
