"""The pure decision: where the key is found, the route's context, and what is answered."""

from __future__ import annotations

import json

import pytest

from ext_authz.decide import Decision, RouteContext, credential, decide, decide_request
from ext_authz.headers import (
    KEY_ID_HEADER,
    POLICY_HEADER,
    ROLES_HEADER,
    SCOPES_HEADER,
    SUBJECT_HEADER,
    TENANT_HEADER,
)
from ext_authz.keys.format import mint
from tests.ext_authz.keyring_support import NOW, TestKey, issue, keyring_of
from xds_server.compiler import identity_names


def test_identity_header_names_are_the_shared_ones() -> None:
    assert SUBJECT_HEADER == identity_names.SUBJECT_HEADER == "x-meshgate-subject"
    assert TENANT_HEADER == identity_names.TENANT_HEADER == "x-meshgate-tenant"
    assert ROLES_HEADER == identity_names.ROLES_HEADER == "x-meshgate-roles"
    assert KEY_ID_HEADER == "x-meshgate-key-id"
    assert POLICY_HEADER == "x-meshgate-authz-policy"
    assert SCOPES_HEADER == "x-meshgate-authz-scopes"
    for name in (KEY_ID_HEADER, POLICY_HEADER, SCOPES_HEADER):
        assert name.startswith(identity_names.IDENTITY_HEADER_PREFIX)  # clients cannot send


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, RouteContext()),
        ({POLICY_HEADER: " partners ", SCOPES_HEADER: ""}, RouteContext("partners")),
        (
            {SCOPES_HEADER: "orders:read, orders:write,,"},
            RouteContext("", frozenset({"orders:read", "orders:write"})),
        ),
    ],
)
def test_route_context_from_headers(headers: dict[str, str], expected: RouteContext) -> None:
    assert RouteContext.from_headers(headers) == expected


K = "mgk_" + "A" * 50  # only has to look like a key here


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": K}, K),
        ({"x-api-key": f" {K} "}, K),
        ({"authorization": f"ApiKey {K}"}, K),
        ({"authorization": f"apikey {K}"}, K),
        ({"authorization": f"Bearer {K}"}, K),
        ({"authorization": f"BEARER  {K} "}, K),
        ({"authorization": "Bearer eyJhbGciOi.jwt.here"}, None),  # a JWT is not ours
        ({"authorization": f"Basic {K}"}, None),
        ({"authorization": K}, None),
        ({"x-api-key": K, "authorization": "Bearer mgk_other"}, K),  # x-api-key wins
        ({"x-api-key": "garbage"}, "garbage"),  # presented, then judged malformed
        ({}, None),
    ],
)
def test_credential_extraction(headers: dict[str, str], expected: str | None) -> None:
    assert credential(headers) == expected


def _body(d: Decision) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(d.body)
    return parsed


def test_an_accepted_key_is_allowed_with_its_identity_upstream() -> None:
    key = issue(tenant="acme", scopes=("orders:read", "orders:write"))
    d = decide(keyring_of(key).verify(key.text, NOW), RouteContext())
    kid = key.record.key_id
    assert (d.allowed, d.status, d.reason, d.body, d.key_id) == (True, 200, "ok", b"", kid)
    assert dict(d.headers) == {
        "x-meshgate-key-id": kid,
        "x-meshgate-subject": "key:" + kid,
        "x-meshgate-tenant": "acme",
        "x-meshgate-roles": "orders:read,orders:write",
    }


def _decide(key_text: str | None, *ring_keys: TestKey, scopes: str = "") -> Decision:
    headers = {SCOPES_HEADER: scopes}
    if key_text is not None:
        headers["x-api-key"] = key_text
    return decide_request(headers, keyring_of(*ring_keys), NOW)


def test_every_401_reason() -> None:
    good, expired, revoked = issue(), issue(expires_at=NOW), issue(revoked_at=NOW)
    ring = (good, expired, revoked)
    cases = {
        "missing_key": _decide(None, *ring),
        "malformed_key": _decide("mgk_short", *ring),
        "unknown_key": _decide(mint().text, *ring),
        "wrong_secret": _decide(mint(good.record.key_id).text, *ring),
        "expired_key": _decide(expired.text, *ring),
        "revoked_key": _decide(revoked.text, *ring),
    }
    for reason, d in cases.items():
        assert (d.allowed, d.status, d.reason) == (False, 401, reason)
        assert _body(d) == {"error": "unauthorized", "reason": reason}
        headers = dict(d.headers)
        assert headers["www-authenticate"] == 'ApiKey realm="meshgate"'
        assert headers["content-type"] == "application/json"
        assert not any(name.startswith("x-meshgate-") for name in headers)


def test_a_missing_scope_is_forbidden_not_unauthorized() -> None:
    key = issue(scopes=("orders:read",))
    d = _decide(key.text, key, scopes="orders:read,orders:write")
    assert (d.allowed, d.status, d.reason, d.key_id) == (
        False,
        403,
        "insufficient_scope",
        key.record.key_id,
    )
    assert _body(d) == {"error": "forbidden", "reason": "insufficient_scope"}
    assert "www-authenticate" not in dict(d.headers)


@pytest.mark.parametrize(
    ("held", "required", "allowed"),
    [
        ((), "", True),  # no scopes required: any valid key
        (("a",), "a", True),
        (("a", "b", "c"), "c, a", True),
        (("a",), "a,b", False),
        ((), "a", False),
        (("orders:*",), "orders:read", False),  # no wildcard semantics (yet)
    ],
)
def test_required_scopes_must_all_be_held(
    held: tuple[str, ...], required: str, allowed: bool
) -> None:
    key = issue(scopes=held)
    assert _decide(key.text, key, scopes=required).allowed is allowed


def test_a_bad_key_is_401_even_where_a_scope_is_missing() -> None:
    assert _decide("mgk_short", issue(), scopes="admin").status == 401
