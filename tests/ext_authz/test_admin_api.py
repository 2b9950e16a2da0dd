"""The key API of ``python -m ext_authz`` (``--admin-token-file``), as a real process on real
sockets over a SQLite store: the lifecycle, the admin credential, the error bodies, and no
token or key in the process output."""

from __future__ import annotations

import http.client
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ext_authz.admin_api import AdminToken, KeyAdmin, mount_key_api, read_admin_token
from ext_authz.stores.base import KeyStoreError
from tests.ext_authz.service_process import AuthzProcess, keys_cli

TOKEN = "adm-" + secrets.token_urlsafe(24)
UNAUTHORIZED_MISSING = {
    "error": "unauthorized",
    "detail": "this route needs 'Authorization: Bearer <admin token>'",
}
UNAUTHORIZED_WRONG = {"error": "unauthorized", "detail": "the admin token does not match"}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    store, hash_key = tmp_path / "keys.db", tmp_path / "key-hash.key"
    keys_cli(store, hash_key, "list")  # the database and the hash key exist, as after setup
    return store, hash_key


def _start(
    tmp_path: Path, files: tuple[Path, Path], *extra: str, workdir: str = "svc"
) -> AuthzProcess:
    # a long resync: whatever the service sees of its own writes, it sees at once or not at all
    p = AuthzProcess(
        tmp_path / workdir,
        str(files[0]),
        files[1],
        "--resync-interval",
        "600",
        "--log-level",
        "DEBUG",
        *extra,
    )
    p.wait_ready()
    return p


@pytest.fixture
def service(tmp_path: Path, files: tuple[Path, Path]) -> Iterator[AuthzProcess]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    p = _start(tmp_path, files, "--admin-token-file", str(token_file))
    try:
        yield p
    finally:
        p.kill()


def _call(service: AuthzProcess, method: str, path: str, body: object = None) -> tuple[int, Any]:
    status, _, got = service.admin(method, path, body, token=TOKEN)
    return status, got


def _create(service: AuthzProcess, **fields: object) -> dict[str, Any]:
    body = {"name": "ci", "tenant": "acme", "scopes": ["orders:read"], **fields}
    status, got = _call(service, "POST", "/v1/keys", body)
    assert status == 201, got
    assert isinstance(got, dict)
    return got


def _assert_no_secrets(service: AuthzProcess, keys: list[str]) -> None:
    assert service.terminate() == 0
    output = service.output()
    assert "key created over the API" in output  # the output is really there
    assert TOKEN not in output and TOKEN[4:] not in output
    for key in keys:
        assert key not in output and key[16:-6] not in output


def test_the_whole_lifecycle_over_the_api_takes_effect_in_this_replica_at_once(
    service: AuthzProcess,
) -> None:
    created = _create(service, expires="90d")
    key, key_id = created["key"], created["key_id"]
    assert set(created) == {"key", "key_id", "name", "tenant", "scopes", "created_at"} | {
        "expires_at",
        "revoked_at",
        "replaced_by",
        "last_used_at",
    }
    assert (created["name"], created["tenant"], created["scopes"]) == (
        "ci",
        "acme",
        ["orders:read"],
    )
    assert created["expires_at"] - created["created_at"] == pytest.approx(90 * 86400)
    assert service.check(key) == (200, "ok")  # no waiting: applied to the keyring by the call

    status, listed = _call(service, "GET", "/v1/keys")
    assert status == 200
    assert listed == [{k: v for k, v in created.items() if k != "key"}]

    status, rotated = _call(service, "POST", f"/v1/keys/{key_id}/rotate", {"grace": "1h"})
    assert status == 201, rotated
    new_key, new_id = rotated["key"], rotated["key_id"]
    assert new_id != key_id and new_key != key
    assert rotated["previous"]["key_id"] == key_id
    assert rotated["previous"]["replaced_by"] == new_id
    assert 0 < rotated["previous"]["expires_at"] - rotated["created_at"] <= 3600
    assert (rotated["tenant"], rotated["scopes"]) == ("acme", ["orders:read"])
    assert service.check(new_key) == (200, "ok")
    assert service.check(key) == (200, "ok")  # within its grace

    status, revoked = _call(service, "POST", f"/v1/keys/{new_id}/revoke")
    assert status == 200, revoked
    assert revoked["key_id"] == new_id and revoked["revoked_at"] is not None
    assert "key" not in revoked and "digest" not in revoked
    assert service.check(new_key) == (401, "revoked_key")  # at once, no poll awaited
    assert service.check(key) == (200, "ok")

    status, listed = _call(service, "GET", "/v1/keys")
    assert sorted(r["key_id"] for r in listed) == sorted([key_id, new_id])
    assert all(set(r) == set(revoked) for r in listed)
    _assert_no_secrets(service, [key, new_key])


def test_without_the_token_or_with_a_wrong_one_every_key_route_is_401(
    service: AuthzProcess,
) -> None:
    key_id = _create(service)["key_id"]
    calls: list[tuple[str, str, object]] = [
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"name": "x", "tenant": "t"}),
        ("POST", "/v1/keys", None),  # no body at all: still 401, not 422
        ("POST", f"/v1/keys/{key_id}/rotate", {"grace": None}),
        ("POST", f"/v1/keys/{key_id}/revoke", None),
    ]
    for method, path, body in calls:
        for token, want in (
            (None, UNAUTHORIZED_MISSING),
            ("", UNAUTHORIZED_WRONG),
            ("x" + TOKEN, UNAUTHORIZED_WRONG),
            (TOKEN[:-1], UNAUTHORIZED_WRONG),
        ):
            status, headers, got = service.admin(method, path, body, token=token)
            assert (status, got) == (401, want), (method, path, token)
            assert headers["www-authenticate"] == "Bearer"
    # another scheme, the token right
    conn_status = _raw(service, "GET", "/v1/keys", {"authorization": f"Basic {TOKEN}"})
    assert conn_status == 401
    # nothing changed: the key is still active, and no second key exists
    status, listed = _call(service, "GET", "/v1/keys")
    assert [(r["key_id"], r["revoked_at"], r["replaced_by"]) for r in listed] == [
        (key_id, None, None)
    ]
    for path in ("/healthz", "/readyz", "/metrics"):  # open as before, no token needed
        assert _raw(service, "GET", path, {}) == 200, path
    assert TOKEN not in service.metrics()
    _assert_no_secrets(service, [])


def _raw(service: AuthzProcess, method: str, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", service.admin_port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_bad_input_unknown_keys_and_conflicts_have_exact_bodies(service: AuthzProcess) -> None:
    def bad(detail: str) -> tuple[int, dict[str, str]]:
        return 400, {"error": "invalid_input", "detail": detail}

    base = {"name": "ci", "tenant": "acme"}
    assert _call(service, "POST", "/v1/keys", {**base, "name": "a,b"}) == bad(
        "name 'a,b': 1-128 characters of letters, digits, space and _ . @ : / -"
    )
    assert _call(service, "POST", "/v1/keys", {**base, "tenant": "a b"}) == bad(
        "tenant 'a b': 1-128 characters of letters, digits and _ . : -"
    )
    assert _call(service, "POST", "/v1/keys", {**base, "scopes": ["ok", "no way"]}) == bad(
        "scope 'no way': 1-128 characters of letters, digits and _ . : / * -"
    )
    assert _call(service, "POST", "/v1/keys", {**base, "expires": "9x"}) == bad(
        "expires '9x': a positive whole number and a unit s, m, h, d or w (like 90d)"
    )
    assert _call(service, "POST", "/v1/keys", {**base, "surprise": 1})[0] == 422
    assert _call(service, "GET", "/v1/keys") == (200, [])  # none of those made a key

    issued = _create(service)
    key, key_id = issued["key"], issued["key_id"]
    assert _call(service, "POST", f"/v1/keys/{key_id}/rotate", {"grace": "0d"}) == bad(
        "grace '0d': a positive whole number and a unit s, m, h, d or w (like 90d)"
    )
    assert _call(service, "POST", f"/v1/keys/{key}/revoke") == bad(
        "give the key id (from GET /v1/keys), not the key itself"
    )
    assert _call(service, "POST", "/v1/keys/nope/revoke") == bad(
        "'nope' is not a key id (12 letters and digits)"
    )

    unknown = "a" * 12 if key_id != "a" * 12 else "b" * 12
    missing = (404, {"error": "unknown_key", "detail": f"no key with id {unknown}"})
    assert _call(service, "POST", f"/v1/keys/{unknown}/revoke") == missing
    assert _call(service, "POST", f"/v1/keys/{unknown}/rotate") == missing

    status, rotated = _call(service, "POST", f"/v1/keys/{key_id}/rotate")  # no body: 1d grace
    assert status == 201
    new_id = rotated["key_id"]
    assert 86400 - 5 < rotated["previous"]["expires_at"] - rotated["created_at"] <= 86400
    assert _call(service, "POST", f"/v1/keys/{key_id}/rotate", {"grace": "1h"}) == (
        409,
        {
            "error": "conflict",
            "detail": f"key {key_id} was already rotated (replaced by {new_id}); "
            f"rotate {new_id} instead",
        },
    )
    assert _call(service, "POST", f"/v1/keys/{new_id}/revoke")[0] == 200
    assert _call(service, "POST", f"/v1/keys/{new_id}/rotate") == (
        409,
        {"error": "conflict", "detail": f"key {new_id} is revoked; only an active key rotates"},
    )
    _assert_no_secrets(service, [key, rotated["key"]])


def test_openapi_lists_the_key_routes(service: AuthzProcess) -> None:
    status, _, doc = service.admin("GET", "/openapi.json")
    assert status == 200 and isinstance(doc, dict)
    paths = doc["paths"]
    assert set(paths["/v1/keys"]) == {"get", "post"}
    assert set(paths["/v1/keys/{key_id}/rotate"]) == {"post"}
    assert set(paths["/v1/keys/{key_id}/revoke"]) == {"post"}
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)


def test_without_the_flag_the_key_routes_do_not_exist(
    tmp_path: Path, files: tuple[Path, Path], service: AuthzProcess
) -> None:
    assert _call(service, "GET", "/v1/keys") == (200, [])  # with the flag, on the same store
    p = _start(tmp_path, files, workdir="plain")
    try:
        for method, path in (
            ("GET", "/v1/keys"),
            ("POST", "/v1/keys"),
            ("POST", "/v1/keys/abcdefghijkl/revoke"),
        ):
            status, _, _ = p.admin(method, path, token=TOKEN)
            assert status == 404, (method, path)
        status, _, doc = p.admin("GET", "/openapi.json")
        assert status == 200 and isinstance(doc, dict)
        assert not any(path.startswith("/v1/keys") for path in doc["paths"])
        assert p.readyz()[0] == 200
    finally:
        p.kill()


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "cannot read it"), ("\n", "empty"), ("one\ntwo\n", "more than one line")],
)
def test_a_token_file_that_cannot_be_used_fails_the_start(
    tmp_path: Path, files: tuple[Path, Path], content: str | None, why: str
) -> None:
    token_file = tmp_path / "admin.token"
    if content is not None:
        token_file.write_text(content)
    p = AuthzProcess(
        tmp_path / "svc", str(files[0]), files[1], "--admin-token-file", str(token_file)
    )
    try:
        assert p.proc.wait(20) == 1
        output = p.output()
        assert "cannot start" in output and f"admin token file {token_file}: {why}" in output
        if content is not None:
            assert "two" not in output
    finally:
        p.kill()


class _StoreDown:
    async def list(self) -> list[object]:
        raise KeyStoreError("key store /x/keys.db: cannot read the keys: disk I/O error")


def test_a_store_that_cannot_be_reached_is_503_and_the_token_hides_in_reprs(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token = read_admin_token(token_file)
    assert TOKEN not in repr(token) and TOKEN not in str(token)
    admins: list[KeyAdmin | None] = [None, cast(KeyAdmin, _StoreDown())]
    app = FastAPI()
    mount_key_api(app, token, lambda: admins[0])
    client = TestClient(app)
    auth = {"authorization": f"Bearer {TOKEN}"}
    got = client.get("/v1/keys", headers=auth)
    assert (got.status_code, got.json()) == (
        503,
        {"error": "store_unavailable", "detail": "the key store is not open yet"},
    )
    admins.pop(0)
    got = client.get("/v1/keys", headers=auth)
    assert (got.status_code, got.json()) == (
        503,
        {
            "error": "store_unavailable",
            "detail": "key store /x/keys.db: cannot read the keys: disk I/O error",
        },
    )
    assert client.get("/v1/keys").status_code == 401
    assert repr(AdminToken(b"s3cret")) == "AdminToken(<hidden>)"
