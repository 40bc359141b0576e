"""Network helpers every test folder uses: a free loopback port, and a throwaway CA with certificates signed by
it for TLS brokers (made with openssl)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def make_ca(directory: Path, cn: str) -> None:
    """``ca.crt`` / ``ca.key`` in ``directory``: a CA valid for 2 days."""
    openssl(
        "req",
        "-x509",
        *EC_KEY,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        f"/CN={cn}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )


def issue(directory: Path, name: str, cn: str, ext: str) -> None:
    """``<name>.crt`` / ``<name>.key`` signed by the CA in ``directory``, with the given extensions."""
    openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=directory)
    (directory / f"{name}.cnf").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + ext
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-extfile",
        f"{name}.cnf",
        cwd=directory,
    )


SERVER_EXT = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"


def tls_listener(port: int, files: dict, server: str = "server", extra: str = "") -> str:
    """A mosquitto configuration: a TLS listener on loopback with ``<server>.crt`` signed by ``ca.crt``."""
    return (
        f"listener {port} 127.0.0.1\ncafile {files['ca.crt']}\ncertfile {files[server + '.crt']}\n"
        f"keyfile {files[server + '.key']}\nallow_anonymous true\n{extra}"
    )
