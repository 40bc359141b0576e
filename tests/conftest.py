"""Shared fixtures: where the real models, images and clips are, and a real mosquitto broker on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test modules import waiting, testnet
from testnet import free_port  # noqa: E402 (found once the path is set)


def _dir_from_env(var: str, default: Path) -> Path:
    path = Path(os.environ.get(var) or default).resolve()
    if not path.is_dir():
        pytest.fail(f"{var}={path} is not a directory (the shared models and data live beside the checkout)")
    return path


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return _dir_from_env("FALLWATCH_MODEL_DIR", SHARED / "models")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _dir_from_env("FALLWATCH_DATA_DIR", SHARED / "data")


@pytest.fixture(scope="session")
def images_dir(data_dir: Path) -> Path:
    return _dir_from_env("FALLWATCH_IMAGES_DIR", data_dir.parent / "images")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if not found:
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto; .ci/run does this)")
    return found


class Mosquitto:
    """A real mosquitto on a free loopback port; stop() and start() keep the same port (outage tests)."""

    def __init__(self, workdir: Path, extra_conf: str = "", port: int | None = None, persistent: bool = False):
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.extra_conf = extra_conf
        # persistent: sessions and their queued QoS 1 messages are saved here (every second, and on stop), so
        # they survive the broker's restart, as the outage tests need.
        self.db_dir = workdir / f"mosquitto-{self.port}-db" if persistent else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        conf = self.extra_conf or "allow_anonymous true\n"
        if "listener" not in conf:
            conf = f"listener {self.port} 127.0.0.1\n" + conf
        if os.geteuid() == 0 and "\nuser " not in "\n" + conf:
            # as root mosquitto switches to the `mosquitto` user, who cannot read the test's files in tmp
            conf = "user root\n" + conf
        if self.db_dir:
            self.db_dir.mkdir(exist_ok=True)
            conf += f"\npersistence true\npersistence_location {self.db_dir}/\nautosave_interval 1\n"
        else:
            conf += "\npersistence false\n"
        self.conf.write_text(conf + "\n")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=open(self.log, "ab"), stderr=subprocess.STDOUT
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A fresh anonymous broker on loopback for one test; `mosquitto.port`, `.stop()`, `.start()`."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path):
    """Make brokers with their own configuration text (password files, TLS listeners)."""
    brokers: list[Mosquitto] = []

    def make(extra_conf: str = "", port: int | None = None, persistent: bool = False) -> Mosquitto:
        broker = Mosquitto(tmp_path, extra_conf, port, persistent)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons a test starts keep their state (outbox, event records) in its tmp_path, never in the home folder."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
