"""The small HTTP side of every meshgate service: /healthz, /readyz, /metrics (+ extras).

FastAPI for the OpenAPI document and typed handlers; uvicorn runs inside the service's own
asyncio loop (no extra thread), with signal handling left to the service so that SIGTERM drains
the gRPC side and the HTTP side in one order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def make_admin_app(
    title: str, ready: Callable[[], tuple[bool, str]], registry: CollectorRegistry
) -> FastAPI:
    app = FastAPI(title=title, docs_url="/docs", redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process runs its event loop."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, str]:
        """Readiness: the service can do its job (e.g. a config snapshot is published)."""
        ok, reason = ready()
        if not ok:
            response.status_code = 503
        return {"status": "ready" if ok else "not ready", "reason": reason}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # the owning service handles SIGTERM/SIGINT and calls shutdown() itself
        yield


class AdminServer:
    """uvicorn on an already-bound socket, so port 0 works and the port is known up front."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]))

    async def shutdown(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
