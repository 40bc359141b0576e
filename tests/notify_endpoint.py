"""A real HTTP endpoint for Apprise's ``json://`` notifications, started by the test: it records every POST (its
path and JSON body) and can be taken down and brought back on the same port, as a phone service's server would."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from testnet import free_port


class JsonEndpoint:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def url(self, path: str = "notify") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def up(self) -> "JsonEndpoint":
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with endpoint.cond:
                    endpoint.received.append({"path": self.path, "body": json.loads(body)})
                    endpoint.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def titles(self) -> list[str]:
        with self.cond:
            return [r["body"]["title"] for r in self.received]

    def wait_count(self, n: int, timeout: float = 20.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.received) >= n, timeout)

    @staticmethod
    def attachment(record: dict) -> tuple[str, str, bytes]:
        """(filename, mimetype, bytes) of a message's one attachment."""
        (att,) = record["body"]["attachments"]
        return att["filename"], att["mimetype"], base64.b64decode(att["base64"])
