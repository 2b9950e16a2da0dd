"""A JWKS endpoint for tests: serves a document you can change, break, slow down and stop.

A real HTTP server (``http.server`` in a thread) on a loopback port, so the control plane's
fetcher is exercised over a real socket exactly as against an identity provider. ``stop()``
closes the port (connections are refused, as from an IdP that is down) and ``start()`` binds
the same port again.

    with JwksServer(jwks_of(key)) as idp:
        config = {... "jwks": {"url": idp.url, "refresh": "1s"} ...}
        idp.document = jwks_of(new_key)     # rotation
        idp.stop()                          # outage
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.control_plane import wait_until


class JwksServer:
    def __init__(self, document: dict[str, Any] | bytes, path: str = "/jwks") -> None:
        self.document: dict[str, Any] | bytes = document
        self.path = path
        #: HTTP status, content type and delay (seconds) of the next answers.
        self.status = 200
        self.content_type = "application/json"
        self.delay = 0.0
        self.requests = 0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def body(self) -> bytes:
        doc = self.document
        return doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                if owner.delay:
                    time.sleep(owner.delay)
                if self.path != owner.path:
                    self.send_error(404)
                    return
                body = owner.body()
                self.send_response(owner.status)
                self.send_header("content-type", owner.content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: fetches are refused until ``start()``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def wait_for_requests(self, more_than: int, timeout: float = 10.0) -> int:
        return wait_until(lambda: self.requests > more_than and self.requests, timeout, "a fetch")

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
