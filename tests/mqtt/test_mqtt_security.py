"""A password-protected broker and a TLS broker with a CA made here with openssl."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from fallwatch.daemon.mqtt.publisher import MqttError
from mqtt_testlib import PREFIX, make_event, wait_until
from testnet import SERVER_EXT, free_port, issue, make_ca, tls_listener

AUTH_REASONS = ("Not authorized", "Bad user name or password")


@pytest.fixture
def password_broker(tmp_path: Path, mosquitto_factory):
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "mosquitto.passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "fallwatch", "s3cret"], check=True, capture_output=True)
    pwfile.chmod(0o600)
    return mosquitto_factory(f"allow_anonymous false\npassword_file {pwfile}\n").start()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_mqtt_wrong_password_one_clear_line_then_right_one_connects(
    password_broker, tmp_path, subscriber_auth, mqtt_cfg, publisher, caplog, protocol
):
    pub = publisher(mqtt_cfg(password_broker.port, protocol=protocol, username="fallwatch", password="wrong"))
    with caplog.at_level(logging.DEBUG, logger="fallwatch.daemon.mqtt.publisher"):
        pub.start()
        # retried with backoff (1 s here): the refusal is seen again, but said clearly only once
        assert wait_until(lambda: any("(still)" in r.getMessage() for r in caplog.records), 5), [
            r.getMessage() for r in caplog.records
        ]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert any(reason in errors[0] for reason in AUTH_REASONS) and f"127.0.0.1:{password_broker.port}" in errors[0]
    assert "mqtt.username" in errors[0] and "s3cret" not in errors[0] and "wrong" not in errors[0]
    assert not pub.connected

    secret = tmp_path / "mqtt_password"
    secret.write_text("s3cret\n")
    sub = subscriber_auth(password_broker.port)
    pub.reconfigure(mqtt_cfg(password_broker.port, protocol=protocol, username="fallwatch", password_file=str(secret)))
    assert wait_until(lambda: pub.connected, 5), "right credentials (password_file) did not connect"
    event = make_event("fall")
    pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]


@pytest.fixture
def subscriber_auth(subscriber):
    return lambda port: subscriber(port, [f"{PREFIX}/#"], auth=("fallwatch", "s3cret"))


@pytest.fixture
def tls_files(tmp_path: Path) -> dict:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "fallwatch test CA")
    issue(d, "server", "localhost", SERVER_EXT)
    issue(d, "othername", "broker.example", "subjectAltName=DNS:broker.example\nextendedKeyUsage=serverAuth\n")
    issue(d, "client", "fallwatch", "extendedKeyUsage=clientAuth\n")
    return {p.name: str(p) for p in d.iterdir()}


def _tls_broker(mosquitto_factory, files: dict, server: str = "server", extra: str = ""):
    port = free_port()
    return mosquitto_factory(tls_listener(port, files, server, extra), port).start()


@pytest.fixture
def tls_broker(tls_files, mosquitto_factory):
    return _tls_broker(mosquitto_factory, tls_files)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_mqtt_tls_with_self_signed_ca(tls_broker, tls_files, subscriber, mqtt_cfg, publisher, host):
    sub = subscriber(tls_broker.port, [f"{PREFIX}/#"], tls_ca=tls_files["ca.crt"], host="localhost")
    pub = publisher(mqtt_cfg(tls_broker.port, host=host, tls={"enabled": True, "ca_certs": tls_files["ca.crt"]}))
    pub.start()
    assert wait_until(lambda: pub.connected, 5), "no TLS connection"
    event = make_event("fall")
    pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]
    assert sub.wait_for(lambda s: b"online" in s.on(f"{PREFIX}/availability"), 3)


def test_mqtt_tls_unknown_ca_is_refused_with_clear_line(tls_broker, mqtt_cfg, publisher, caplog):
    # the system store does not know our throwaway CA: the broker must not be trusted
    pub = publisher(mqtt_cfg(tls_broker.port, host="localhost", tls={"enabled": True}))
    with caplog.at_level(logging.DEBUG, logger="fallwatch.daemon.mqtt.publisher"):
        pub.start()
        assert wait_until(lambda: any("TLS" in r.getMessage() for r in caplog.records), 5)
        # it retries (the repeat goes to DEBUG), without a second error line
        assert wait_until(lambda: any("(still)" in r.getMessage() for r in caplog.records), 15), caplog.text
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "CERTIFICATE_VERIFY_FAILED" in lines[0] and "mqtt.tls" in lines[0], lines
    assert not pub.connected


def test_mqtt_tls_missing_ca_file_is_a_clear_error(tmp_path, mqtt_cfg, publisher):
    pub = publisher(mqtt_cfg(1, tls={"enabled": True, "ca_certs": str(tmp_path / "nope.crt")}))
    with pytest.raises(MqttError, match=r"mqtt\.tls"):
        pub.start()


def test_mqtt_reconfigure_to_unusable_tls_keeps_the_connection(mosquitto, tmp_path, mqtt_cfg, publisher):
    pub = publisher(mqtt_cfg(mosquitto.port))
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    bad = mqtt_cfg(mosquitto.port, tls={"enabled": True, "ca_certs": str(tmp_path / "missing-ca.crt")})
    with pytest.raises(MqttError, match="mqtt.tls"):
        pub.reconfigure(bad)
    assert pub.connected and pub.cfg.tls.enabled is False


def test_mqtt_tls_host_name_check_and_insecure(tls_files, mosquitto_factory, mqtt_cfg, publisher, caplog):
    """A certificate for another name is refused; `insecure: true` skips only the name check (CA still checked)."""
    broker = _tls_broker(mosquitto_factory, tls_files, server="othername")
    strict = publisher(mqtt_cfg(broker.port, tls={"enabled": True, "ca_certs": tls_files["ca.crt"]}))
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        strict.start()
        assert wait_until(lambda: any("TLS" in r.getMessage() for r in caplog.records), 5)
    assert not strict.connected
    assert any(
        "127.0.0.1" in r.getMessage() and ("mismatch" in r.getMessage() or "not valid" in r.getMessage())
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    strict.stop()
    loose = publisher(
        mqtt_cfg(
            broker.port, client_id="loose", tls={"enabled": True, "ca_certs": tls_files["ca.crt"], "insecure": True}
        )
    )
    loose.start()
    assert wait_until(lambda: loose.connected, 5)


def test_mqtt_tls_client_certificate(tls_files, mosquitto_factory, mqtt_cfg, publisher, caplog):
    broker = _tls_broker(mosquitto_factory, tls_files, extra="require_certificate true\n")
    without = publisher(
        mqtt_cfg(broker.port, client_id="nocert", tls={"enabled": True, "ca_certs": tls_files["ca.crt"]})
    )
    with caplog.at_level(logging.WARNING, logger="fallwatch.daemon.mqtt.publisher"):
        without.start()
        assert wait_until(lambda: any("certfile" in r.getMessage() for r in caplog.records), 5), [
            r.getMessage() for r in caplog.records
        ]
    withcert = publisher(
        mqtt_cfg(
            broker.port,
            client_id="withcert",
            tls={
                "enabled": True,
                "ca_certs": tls_files["ca.crt"],
                "certfile": tls_files["client.crt"],
                "keyfile": tls_files["client.key"],
            },
        )
    )
    withcert.start()
    assert wait_until(lambda: withcert.connected, 5)
    assert not without.connected


def test_mqtt_credential_settings_that_cannot_work_are_named(tmp_path, mqtt_cfg, publisher):
    """A TLS file that went away after the configuration was checked gives one line naming the setting and the
    file, instead of a nameless errno. (A key without its certificate, a password without a user name: the
    configuration itself refuses them, see tests/config.)"""
    missing = tmp_path / "client.key"
    cert = tmp_path / "client.crt"
    cert.write_text("not used")
    cases = [
        (
            {"tls": {"enabled": True, "certfile": str(cert), "keyfile": str(missing)}},
            rf"mqtt\.tls\.keyfile: cannot read {missing}: No such file",
        ),
    ]
    for overrides, message in cases:
        pub = publisher(mqtt_cfg(1, **overrides))
        with pytest.raises(MqttError, match=message) as info:
            pub.start()
        assert "\n" not in str(info.value) and "s3cret" not in str(info.value)


def test_mqtt_event_refused_by_the_broker_acl_is_kept(
    tmp_path, mosquitto_factory, subscriber, mqtt_cfg, publisher, caplog
):
    """MQTT 5: a broker that refuses the event (its ACL) says so in the PUBACK. The event is not 'sent': it stays
    in the outbox, one line names it, and once the broker is fixed a restart delivers it."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny fallwatch/testdev/event\n")
    conf = f"allow_anonymous true\nacl_file {acl}\n"
    broker = mosquitto_factory(conf).start()
    cfg = mqtt_cfg(broker.port, protocol="5")
    pub = publisher(cfg)
    pub.start()
    assert wait_until(lambda: pub.connected, 5)
    event = make_event("fall")
    with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.mqtt.publisher"):
        pub.publish_event(event)
        assert wait_until(lambda: any(event["id"] in r.getMessage() for r in caplog.records), 5), [
            r.getMessage() for r in caplog.records
        ]
    line = next(r.getMessage() for r in caplog.records if event["id"] in r.getMessage())
    assert "Not authorized" in line and "outbox" in line, line
    assert pub.stats()["events_sent"] == 0 and pub.stats()["events_queued"] == 1, pub.stats()
    pub.stop()

    broker.stop()
    acl.write_text("topic readwrite #\n")  # the broker's ACL is fixed
    broker.start()
    sub = subscriber(broker.port, [f"{PREFIX}/event"])
    again = publisher(cfg)
    again.start()
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]


def test_mqtt_sighup_rereads_a_changed_password_file(password_broker, tmp_path, subscriber_auth, mqtt_cfg, publisher):
    """A rotated secret (same password_file path, new content, as with systemd credentials) is used after a
    reload; the settings themselves did not change."""
    secret = tmp_path / "mqtt_password"
    secret.write_text("old-secret\n")
    cfg = mqtt_cfg(password_broker.port, username="fallwatch", password_file=str(secret))
    pub = publisher(cfg)
    pub.start()
    assert not wait_until(lambda: pub.connected, 1.5), "connected with the wrong password"
    secret.write_text("s3cret\n")
    pub.reconfigure(mqtt_cfg(password_broker.port, username="fallwatch", password_file=str(secret)))
    assert wait_until(lambda: pub.connected, 5), "the new password in the same file was not used"
    sub = subscriber_auth(password_broker.port)
    event = make_event("fall")
    pub.publish_event(event)
    assert [json.loads(p)["id"] for p in sub.wait_count(f"{PREFIX}/event", 1)] == [event["id"]]


def test_the_readme_acl_keeps_other_users_from_pausing_alerts(
    tmp_path, mosquitto_factory, subscriber, mqtt_cfg, publisher
):
    # Side door 3: anyone who could publish to the broker could switch alerts off for good. The ACL of the MQTT
    # page (docs/mqtt.md), run here as it is printed, lets only Home Assistant (and the daemon) command fallwatch.
    import re

    readme = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text()
    acl_text = re.search(r"```text\n(# mosquitto ACL for fallwatch\n.*?)```", readme, re.S).group(1)
    acl = tmp_path / "acl"
    acl.write_text(acl_text)
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "mosquitto.passwd"
    for i, (user, password) in enumerate((("fallwatch", "s3cret"), ("homeassistant", "ha"), ("guest", "guest"))):
        subprocess.run(
            [passwd, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password], check=True, capture_output=True
        )
    pwfile.chmod(0o600)
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pwfile}\nacl_file {acl}\n").start()
    pub = publisher(mqtt_cfg(broker.port, username="fallwatch", password="s3cret"))
    home = subscriber(broker.port, [f"{PREFIX}/#"], auth=("homeassistant", "ha"))
    guest = subscriber(broker.port, [f"{PREFIX}/#"], auth=("guest", "guest"))
    pub.start()
    assert home.wait_for(lambda s: s.on(f"{PREFIX}/alerts") == [b"ON"], 5)
    assert guest.wait_for(lambda s: s.on(f"{PREFIX}/alerts") == [b"ON"], 5), "other users may watch"

    # the guest's pause is acknowledged by the broker (3.1.1 has no refusal) but goes nowhere ...
    guest.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1).wait_for_publish(5)
    # ... as a command sent after it by Home Assistant shows: it arrives, the pause before it did not
    home.client.publish(f"{PREFIX}/set", json.dumps({"test": True}), qos=1)
    assert home.wait_for(lambda s: len(s.on(f"{PREFIX}/event")) == 1, 5)
    assert pub.alerts_enabled is True
    # Home Assistant may pause them
    home.client.publish(f"{PREFIX}/set", json.dumps({"alerts": False}), qos=1)
    assert wait_until(lambda: pub.alerts_enabled is False, 5)
