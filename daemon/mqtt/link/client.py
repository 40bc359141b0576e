"""paho's MQTT client, hardened against what a broker may send (used by mqtt/link/connection.py).

- ``CappedClient`` never holds more than ``MAX_MESSAGE_BYTES`` of an incoming PUBLISH. paho reads a whole packet
  into memory before anyone may look at it (a 200 MB message took the daemon from 137 to 923 MB), and MQTT 3.1.1
  has no way to ask the broker for less (MQTT 5 has: link/connection.py sends a Maximum Packet Size in CONNECT).
  Past the limit the rest of the packet is read from the socket and dropped as it arrives; the message is still
  delivered (with what was kept), so paho acknowledges it, and ``dropped_size`` tells ``on_message`` to refuse it.
- ``guarded(callback)``: a paho callback that never raises into paho's network thread, which an exception ends
  for good (no reconnect, no alert leaves the house).
- ``loop_alive`` and ``abandon``: for the watchdog that restarts a client whose loop stopped.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from fallwatch.daemon.telemetry.ratelog import LogLimiter

LOGGER = "fallwatch.daemon.mqtt.publisher"  # one logger for the MQTT output, as the user sees it
log = logging.getLogger(LOGGER)

MAX_MESSAGE_BYTES = 64 * 1024  # a command is a few dozen bytes; Home Assistant's birth message is "online"
_PUBLISH = 0x30
_KEEP = 2 + 65535 + 2  # the longest topic and the packet id: what paho needs to deliver and acknowledge it
_CHUNK = 1 << 16  # bytes read at a time from an oversize packet

_callback_failures = LogLimiter(log)


class CappedClient(mqtt.Client):
    """A paho Client that keeps at most ``_KEEP`` bytes of any incoming PUBLISH above ``MAX_MESSAGE_BYTES``.

    Leans on two paho internals (its packet-reading state ``_in_packet`` and ``_sock_recv``); the tests measure
    the memory of a huge message, so a paho that changes them is noticed."""

    dropped_size: Optional[int] = None  # remaining length of the PUBLISH whose body is being dropped

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if not (packet["have_remaining"] and packet["remaining_length"] > MAX_MESSAGE_BYTES + _KEEP):
            return super()._sock_recv(bufsize)
        if packet["command"] & 0xF0 != _PUBLISH:  # no other packet a broker sends is anywhere near this size
            raise ConnectionResetError(f"the broker sent a packet of {packet['remaining_length']} bytes")
        kept = len(packet["packet"])
        if kept < _KEEP:
            return super()._sock_recv(min(bufsize, _KEEP - kept))
        self.dropped_size = packet["remaining_length"]
        data = super()._sock_recv(min(bufsize, _CHUNK))
        if not data:
            return data  # the connection closed: paho says so
        # paho counts what it is given against the packet's length, and keeps it: count the rest here, give one byte
        packet["to_process"] -= len(data) - 1
        return data[-1:]

    def _handle_publish(self) -> Any:
        try:
            return super()._handle_publish()  # calls on_message (QoS 0 and 1), which reads dropped_size
        finally:
            self.dropped_size = None


def guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """``callback`` for paho, never raising into paho's network thread. The failure is logged instead, with its
    traceback, 5 times a minute at most per callback."""

    @functools.wraps(callback)
    def call(*args: Any) -> None:
        try:
            callback(*args)
        except Exception as exc:
            _callback_failures.log(
                logging.ERROR,
                callback.__name__,
                "MQTT: %s failed (%s); the client carries on",
                callback.__name__,
                type(exc).__name__,
                exc_info=True,
            )

    return call


def flush_failures() -> None:
    """The count of callback failures held back (called by the watchdog once a second)."""
    _callback_failures.flush()


def loop_alive(client: mqtt.Client) -> bool:
    """paho's network thread (loop_start) is running. paho has no public call for it: its ``_thread``."""
    thread = getattr(client, "_thread", None)
    return thread is not None and thread.is_alive()


def abandon(client: mqtt.Client) -> None:
    """Let go of a client the watchdog replaced, in a thread of its own: stopping a wedged loop may block."""

    def close() -> None:
        try:
            client.disconnect()
            client.loop_stop()
        except Exception as exc:
            log.debug("closing the replaced MQTT client: %s", exc)

    threading.Thread(target=close, name="mqtt-abandon", daemon=True).start()
