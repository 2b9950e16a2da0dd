"""The key API of ``python -m ext_authz``: ``/v1/keys`` on the admin HTTP side, mounted only
with ``--admin-token-file``.

``GET /v1/keys`` lists public records; ``POST /v1/keys`` creates a key, ``POST
/v1/keys/{key_id}/rotate`` issues its successor, ``POST /v1/keys/{key_id}/revoke`` ends it.
The key text appears once, in the create or rotate response, and nowhere else (no log, no
error). Every call needs ``Authorization: Bearer <admin token>`` (compared in constant time;
401 with ``WWW-Authenticate: Bearer`` otherwise), checked before the body is read.

Errors are ``{"error": code, "detail": why}``: 400 ``invalid_input`` (the messages of
:class:`~ext_authz.keys.record.KeyInputError`), 404 ``unknown_key``, 409 ``conflict`` (already
rotated, not active), 503 ``store_unavailable``; FastAPI's own 422 for a body of the wrong shape.

Writes run on the store thread of :class:`~ext_authz.sync.KeySync` and each changed record is
applied to this replica's keyring as soon as the store acknowledged it (a SQLite service does
not see its own commits through ``data_version``), so a key revoked here is refused here at once.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from ext_authz.keyring import Keyring
from ext_authz.keys.format import key_id_argument
from ext_authz.keys.lifecycle import DEFAULT_GRACE, Issued, KeyBook
from ext_authz.keys.record import KeyInputError, KeyRecord, parse_duration
from ext_authz.stores.base import KeyConflict, KeyStoreError, UnknownKey
from ext_authz.sync import KeySync

log = logging.getLogger("meshgate.ext_authz.admin")

PREFIX = "/v1/keys"
#: an admin token file is one short line; anything bigger is a wrong file
MAX_TOKEN_BYTES = 4096

T = TypeVar("T")

#: for the OpenAPI document (a security scheme on every key route); the check is ours
_BEARER = HTTPBearer(auto_error=False, description="the line of --admin-token-file")
#: module level: the handlers' annotations are resolved in this module's namespace
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class AdminTokenError(ValueError):
    """The admin token file cannot be used; the message names the file, never its content."""


class AdminToken:
    """The admin credential; its repr and str hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "AdminToken(<hidden>)"

    __str__ = __repr__

    def problem(self, authorization: str | None) -> str | None:
        """None when ``authorization`` is ``Bearer <this token>``; otherwise why not."""
        if not authorization:
            return "this route needs 'Authorization: Bearer <admin token>'"
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return "this route needs 'Authorization: Bearer <admin token>'"
        try:
            raw = presented.strip().encode("latin-1")  # the header's bytes as sent
        except UnicodeEncodeError:
            raw = b""
        if not hmac.compare_digest(raw, self._value):
            return "the admin token does not match"
        return None


def read_admin_token(path: Path) -> AdminToken:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise AdminTokenError(f"admin token file {path}: cannot read it: {why}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise AdminTokenError(f"admin token file {path}: more than {MAX_TOKEN_BYTES} bytes")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise AdminTokenError(f"admin token file {path}: not UTF-8 text") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise AdminTokenError(f"admin token file {path}: empty; one line, the token, expected")
    if any(line.strip() for line in lines[1:]):
        raise AdminTokenError(f"admin token file {path}: more than one line")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise AdminTokenError(f"admin token file {path}: the token holds spaces or control codes")
    return AdminToken(token.encode("utf-8"))


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(status, error, detail)
        self.status, self.error, self.detail = status, error, detail


def _error(status: int, error: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "detail": detail}, status, headers=headers)


class KeyAdmin:
    """The key operations as the API runs them: on the store thread, each change applied to
    the keyring right away."""

    def __init__(self, book: KeyBook, sync: KeySync, keyring: Keyring) -> None:
        self.book, self.sync, self.keyring = book, sync, keyring

    async def list(self) -> list[KeyRecord]:
        return await self.sync.call(self.book.list)

    async def create(
        self, name: str, tenant: str, scopes: tuple[str, ...], ttl: float | None
    ) -> Issued:
        issued = await self.sync.call(self.book.create, name, tenant, scopes, ttl)
        self.keyring.apply(issued.record)
        return issued

    async def rotate(self, key_id: str, grace: float) -> tuple[Issued, KeyRecord]:
        issued, old = await self.sync.call(self.book.rotate, key_id, grace)
        self.keyring.apply(issued.record)
        self.keyring.apply(old)
        return issued, old

    async def revoke(self, key_id: str) -> KeyRecord:
        record = await self.sync.call(self.book.revoke, key_id)
        self.keyring.apply(record)
        return record


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="what the key is for (shown by list)")
    tenant: str = Field(description="the tenant the key acts for")
    scopes: list[str] = Field(default_factory=list, description="like orders:read")
    expires: str | None = Field(None, description="lifetime like 90d, 12h; null: never")


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace: str | None = Field(None, description="how long the old key stays valid (null: 1d)")


def _key_id(text: str) -> str:
    try:
        return key_id_argument(text, "GET /v1/keys")
    except ValueError as exc:
        raise KeyInputError(str(exc)) from None


def _issued(i: Issued) -> dict[str, object]:
    return {"key": i.text, **i.record.public()}


def mount_key_api(app: FastAPI, token: AdminToken, admin: Callable[[], KeyAdmin | None]) -> None:
    """``/v1/keys`` on ``app``, behind ``token``; ``admin()`` is None until the service has
    opened its store (503 meanwhile)."""

    @app.middleware("http")
    async def require_token(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # before routing, so that nothing of the request (not even its body) is read first
        path = request.scope["path"]
        if path == PREFIX or path.startswith(PREFIX + "/"):
            problem = token.problem(request.headers.get("authorization"))
            if problem is not None:
                return _error(401, "unauthorized", problem)
        return await call_next(request)

    def authorized(request: Request, _: BearerCredentials) -> None:
        problem = token.problem(request.headers.get("authorization"))  # and again, per route
        if problem is not None:
            raise ApiError(401, "unauthorized", problem)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    async def run(op: Callable[[KeyAdmin], Awaitable[T]]) -> T:
        current = admin()
        if current is None:
            raise ApiError(503, "store_unavailable", "the key store is not open yet")
        try:
            return await op(current)
        except KeyInputError as exc:
            raise ApiError(400, "invalid_input", str(exc)) from None
        except UnknownKey as exc:
            raise ApiError(404, "unknown_key", f"no key with id {exc.args[0]}") from None
        except KeyConflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except KeyStoreError as exc:
            log.warning("key API: store call failed", extra={"fields": {"error": str(exc)}})
            raise ApiError(503, "store_unavailable", str(exc)) from None

    router = APIRouter(prefix=PREFIX, tags=["keys"], dependencies=[Depends(authorized)])

    @router.get("")
    async def list_keys() -> list[dict[str, object]]:
        """Every key's public record (no key, no hash)."""
        records = await run(lambda a: a.list())
        return [r.public() for r in records]

    @router.post("", status_code=201)
    async def create_key(body: CreateKey) -> dict[str, object]:
        """Issue a key: ``key`` is in this response and never again."""

        async def op(a: KeyAdmin) -> Issued:
            ttl = None if body.expires is None else parse_duration(body.expires, "expires")
            return await a.create(body.name, body.tenant, tuple(body.scopes), ttl)

        issued = await run(op)
        fields = {"key_id": issued.record.key_id, "tenant": issued.record.tenant}
        log.info("key created over the API", extra={"fields": fields})
        return _issued(issued)

    @router.post("/{key_id}/rotate", status_code=201)
    async def rotate_key(key_id: str, body: RotateKey | None = None) -> dict[str, object]:
        """Issue the key's successor (``key``, shown once); the old key stays valid for
        ``grace`` (default 1d) and is returned as ``previous``."""
        grace_text = None if body is None else body.grace

        async def op(a: KeyAdmin) -> tuple[Issued, KeyRecord]:
            grace = DEFAULT_GRACE if grace_text is None else parse_duration(grace_text, "grace")
            return await a.rotate(_key_id(key_id), grace)

        issued, old = await run(op)
        fields = {"key_id": old.key_id, "replaced_by": issued.record.key_id}
        log.info("key rotated over the API", extra={"fields": fields})
        return {**_issued(issued), "previous": old.public()}

    @router.post("/{key_id}/revoke")
    async def revoke_key(key_id: str) -> dict[str, object]:
        """End the key now (a second revoke keeps the first time)."""
        record = await run(lambda a: a.revoke(_key_id(key_id)))
        log.info("key revoked over the API", extra={"fields": {"key_id": record.key_id}})
        return record.public()

    app.include_router(router)
