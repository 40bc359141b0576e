"""The one check every state-changing request to the debug server passes (today a record's label; any POST route
added later goes through it too, as web/server.py applies it to every POST): it must come from this server's own page.

- ``Host`` must be a name the server answers as: the address the connection came in on, the bound address,
  ``localhost`` names, this machine's host name (and ``<name>.local``) when bound to every address, or a name in
  ``debug.hosts``. A DNS-rebinding page talks to the server under the attacker's name, so it is refused here.
- ``Origin``, when the browser sends one, must be the same host and port as ``Host``: a page of another site
  posting through the user's browser sends its own origin.
- The body must be declared ``application/json``: a form or a ``text/plain`` fetch from another site needs no
  CORS preflight, a JSON one does (and this server answers no preflight).

Pure: headers and names in, a refusal (status, one line) or None out.
"""

from __future__ import annotations

import ipaddress
import socket
from email.message import Message
from http import HTTPStatus
from typing import Iterable, Mapping, Optional
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def server_names(bind_host: str, configured: Iterable[str] = ()) -> frozenset[str]:
    """The host names (lower case, no port) this server answers as, besides the connection's own address."""
    names = {*LOCAL_NAMES, bind_host.lower(), *(n.lower().rstrip(".") for n in configured)}
    if bind_host in WILDCARDS:  # reachable on the network: as the machine's name too (raspberrypi, raspberrypi.local)
        hostname = socket.gethostname().lower()
        names |= {hostname, f"{hostname}.local", socket.getfqdn().lower()}
    return frozenset(n for n in names if n)


def split_host(value: str) -> tuple[str, Optional[int]]:
    """'name:port', '[::1]:port' or a bare name -> (lower-case name without brackets, port or None); ValueError."""
    parsed = urlsplit("//" + value.strip())
    port = parsed.port  # ValueError for a port out of range or not a number
    name = (parsed.hostname or "").rstrip(".")
    if not name or parsed.username is not None or parsed.path or parsed.query or parsed.fragment:
        raise ValueError(value)
    return name, port


def _same_address(name: str, local_address: str) -> bool:
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(local_address.split("%")[0])
    except ValueError:
        return False


def check_state_change(
    headers: "Message | Mapping[str, str]", names: frozenset[str], local_address: str
) -> Optional[tuple[int, str]]:
    """None when the request may change state, else (HTTP status, the reason in one line).
    ``local_address``: the address the connection was accepted on (getsockname)."""
    host = headers.get("Host")
    if not host:
        return HTTPStatus.BAD_REQUEST, "refused: a request that changes something needs a Host header"
    try:
        name, _ = split_host(host)
    except ValueError:
        return HTTPStatus.BAD_REQUEST, f"refused: Host {host!r} is not a host name"
    if name not in names and not _same_address(name, local_address):
        return HTTPStatus.FORBIDDEN, f"refused: Host {host!r} is not a name this server answers as (see debug.hosts)"
    origin = headers.get("Origin")
    if origin is not None:
        try:
            parsed = urlsplit(origin.strip())
            default = {"http": 80, "https": 443}[parsed.scheme]  # KeyError: "null", a file: page...
            (origin_name, origin_port), (host_name, host_port) = split_host(parsed.netloc), split_host(host)
            same = origin_name == host_name and (origin_port or default) == (host_port or default)
        except (KeyError, ValueError):
            same = False
        if not same:
            return HTTPStatus.FORBIDDEN, f"refused: Origin {origin!r} is another site than Host {host!r}"
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"refused: Content-Type must be application/json, got {ctype!r}"
    return None
