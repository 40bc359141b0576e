"""A few lines of MQTT 3.1.1 over a raw socket, for what paho refuses to send: a PUBLISH whose topic is not UTF-8,
and a huge payload streamed without holding it in memory. Both as a client (to a broker) and as a one-connection
broker (mosquitto itself refuses to forward an invalid topic, but a broker that does is what a client must survive).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Optional

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    0x10,
    0x20,
    0x30,
    0x40,
    0x80,
    0x90,
    0xC0,
    0xD0,
    0xE0,
)


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def string(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def publish_head(topic: bytes, payload_len: int, *, retain: bool = False, qos: int = 0, mid: int = 1) -> bytes:
    """The fixed and variable header of a PUBLISH whose payload (``payload_len`` bytes) follows separately."""
    variable = string(topic) + (struct.pack("!H", mid) if qos else b"")
    first = PUBLISH | (qos << 1) | (1 if retain else 0)
    return bytes([first]) + remaining_length(len(variable) + payload_len) + variable


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """(first byte, body) of the next packet; ConnectionError when the peer closed."""
    first = _exact(sock, 1)[0]
    length, mult = 0, 1
    while True:
        byte = _exact(sock, 1)[0]
        length += (byte & 127) * mult
        mult *= 128
        if not byte & 128:
            break
    return first, _exact(sock, length)


def _exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        data += chunk
    return bytes(data)


class RawClient:
    """An MQTT 3.1.1 client on a plain socket (clean session, no keepalive)."""

    def __init__(self, port: int, client_id: str = "raw", host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        body = string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + string(client_id.encode())
        self.sock.sendall(packet(CONNECT, body))
        first, ack = read_packet(self.sock)
        if first != CONNACK or ack[1] != 0:
            raise ConnectionError(f"broker refused the connection: {first:#x} {ack!r}")

    def publish(self, topic: bytes, payload: bytes = b"", *, retain: bool = False) -> None:
        self.sock.sendall(publish_head(topic, len(payload), retain=retain) + payload)

    def publish_stream(self, topic: bytes, size: int, *, retain: bool = False, fill: bytes = b"a") -> None:
        """A payload of ``size`` bytes of ``fill``, sent in 1 MiB pieces (never held whole)."""
        self.sock.sendall(publish_head(topic, size, retain=retain))
        piece = fill * (1 << 20)
        left = size
        while left:
            n = min(left, len(piece))
            self.sock.sendall(piece[:n])
            left -= n

    def alive(self) -> bool:
        """The broker still talks to us (PINGREQ answered)."""
        try:
            self.sock.sendall(bytes([PINGREQ, 0]))
            while True:
                first, _ = read_packet(self.sock)
                if first == PINGRESP:
                    return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([DISCONNECT, 0]))
        except OSError:
            pass
        self.sock.close()


class OneClientBroker:
    """Accepts one MQTT client, acknowledges its CONNECT, SUBSCRIBEs and QoS 1 PUBLISHes and answers its pings (in a
    thread of its own), records what it publishes, and lets the test send it raw packets. Enough to show what a
    client does with what a real broker would not forward."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.conn: Optional[socket.socket] = None
        self.subscribed: list[bytes] = []
        self.published: list[tuple[bytes, bytes]] = []  # (topic, payload) from the client
        self.closed = threading.Event()  # the client's connection ended
        self._send_lock = threading.Lock()

    def accept(self, timeout: float = 30.0) -> None:
        """Wait for the client and acknowledge its CONNECT; then serve it in a thread."""
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(None)
        first, _ = read_packet(self.conn)
        assert first & 0xF0 == CONNECT, f"expected CONNECT, got {first:#x}"
        self.send(bytes([CONNACK, 2, 0, 0]))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        assert self.conn is not None
        try:
            while True:
                first, body = read_packet(self.conn)
                kind = first & 0xF0
                if kind == SUBSCRIBE:
                    mid, rest, granted = body[:2], body[2:], bytearray()
                    while rest:
                        (n,) = struct.unpack("!H", rest[:2])
                        self.subscribed.append(rest[2 : 2 + n])
                        rest = rest[3 + n :]
                        granted.append(1)
                    self.send(packet(SUBACK, mid + bytes(granted)))
                elif kind == PINGREQ:
                    self.send(bytes([PINGRESP, 0]))
                elif kind == PUBLISH:
                    (n,) = struct.unpack("!H", body[:2])
                    topic, rest = body[2 : 2 + n], body[2 + n :]
                    if (first >> 1) & 3:
                        self.send(packet(PUBACK, rest[:2]))
                        rest = rest[2:]
                    self.published.append((topic, rest))
                elif kind == DISCONNECT:
                    break
        except OSError:
            pass
        finally:
            self.closed.set()

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        with self._send_lock:
            self.conn.sendall(data)

    def payloads(self, topic: bytes) -> list[bytes]:
        return [payload for t, payload in list(self.published) if t == topic]

    def close(self) -> None:
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()
