"""A hostile service for the gateway tests: a real HTTP server whose /__schema says what a test wants.

It answers ``GET /__schema`` with :attr:`Rogue.schema` (trickled
:attr:`Rogue.trickle` seconds per byte if set, padded differently each time
if :attr:`Rogue.vary`) and ``POST /__authorize`` with
"allowed", recording every request it gets (headers and body): what a
compromised service behind a gateway would see.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.redis_server import free_port


class Rogue:
    def __init__(self, entities: list[dict[str, Any]], access: str = "staff") -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.trickle = 0.0
        self.vary = False
        self.set(entities, access)
        rogue = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rogue.requests.append((f"{self.command} {self.path}", dict(self.headers.items()), body))
                return body

            def do_GET(self) -> None:
                self._record()
                body = rogue.schema
                if rogue.vary:  # a different body every time: the gateway cannot skip parsing it
                    body += b" " * (len(rogue.requests) % 64)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if rogue.trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(rogue.trickle)
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the gateway gave up

            def do_POST(self) -> None:
                self._record()
                answer = json.dumps({"allowed": True, "server_filters": {}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, entities: list[dict[str, Any]], access: str = "staff", raw: bytes | None = None) -> None:
        self.schema = raw if raw is not None else json.dumps(
            {"subscriptions": entities, "events": [], "caches": [], "access": access}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
