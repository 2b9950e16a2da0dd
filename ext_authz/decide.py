"""The decision on one request: pure, from the headers Envoy forwards and the keyring.

Envoy's HTTP ext_authz filter forwards the original request's headers; the route's
context arrives as two of them (:data:`~ext_authz.headers.POLICY_HEADER`,
:data:`~ext_authz.headers.SCOPES_HEADER`), set by Envoy's route config. The answer is a
:class:`Decision`: on allow, the identity headers Envoy adds upstream (its
``allowed_upstream_headers`` picks them); on deny, the status, a JSON body naming the reason
code, and for 401 the ``www-authenticate`` challenge.

No clock, no I/O: the caller passes ``now`` and the keyring.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ext_authz.headers import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    KEY_ID_HEADER,
    POLICY_HEADER,
    ROLES_HEADER,
    SCOPES_HEADER,
    SUBJECT_HEADER,
    TENANT_HEADER,
    WWW_AUTHENTICATE_HEADER,
    WWW_AUTHENTICATE_VALUE,
)
from ext_authz.keyring import KeyCheck, KeyProblem, Keyring
from ext_authz.keys.format import PREFIX

#: Every reason a decision can give: the key problems, no key at all, and a valid key that
#: lacks a scope the route requires (the only 403).
Reason = KeyProblem | Literal["ok", "missing_key", "insufficient_scope"]

#: Authorization schemes that may carry a meshgate key (compared case-insensitively).
_SCHEMES = frozenset({"apikey", "bearer"})


@dataclass(frozen=True)
class RouteContext:
    """What the route asks of a key: its policy's name and the scopes the key must hold
    (empty: any valid key)."""

    policy: str = ""
    required_scopes: frozenset[str] = frozenset()

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RouteContext:
        """The context in ``headers`` (names lower-case). Scopes are comma-separated; blank
        items are ignored, so ``""`` and a missing header both mean any valid key."""
        scopes = headers.get(SCOPES_HEADER, "")
        return cls(
            policy=headers.get(POLICY_HEADER, "").strip(),
            required_scopes=frozenset(s.strip() for s in scopes.split(",") if s.strip()),
        )


@dataclass(frozen=True)
class Decision:
    """What to answer Envoy. ``headers`` go upstream on allow, to the client on deny."""

    allowed: bool
    status: int
    reason: Reason
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)
    #: the accepted or refused key's public id, for logs and the audit trail
    key_id: str | None = None


def credential(headers: Mapping[str, str]) -> str | None:
    """The key the client presented, or None when it presented none.

    ``x-api-key`` wins; otherwise ``authorization: ApiKey <key>`` or ``Bearer <key>``, the
    latter only when the token starts with the key prefix (any other bearer token is a JWT,
    not ours to judge). What is returned is not yet known to be well-formed.
    """
    key = headers.get(API_KEY_HEADER)
    if key is not None:
        return key.strip()
    scheme, _, token = headers.get(AUTHORIZATION_HEADER, "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() in _SCHEMES and token.startswith(PREFIX):
        return token
    return None


def _deny(status: int, reason: Reason, key_id: str | None) -> Decision:
    error = "unauthorized" if status == 401 else "forbidden"
    headers = [("content-type", "application/json")]
    if status == 401:
        headers.append((WWW_AUTHENTICATE_HEADER, WWW_AUTHENTICATE_VALUE))
    body = json.dumps({"error": error, "reason": reason}, separators=(",", ":")).encode()
    return Decision(False, status, reason, tuple(headers), body, key_id)


def decide(check: KeyCheck | None, route: RouteContext) -> Decision:
    """Allow, 401 or 403 for a key check (None: the client presented no key) on ``route``.

    A key without a required scope is 403, not 401: the caller is known, and presenting
    the same key again will not help.
    """
    if check is None:
        return _deny(401, "missing_key", None)
    if check.problem is not None or check.record is None:
        return _deny(401, check.problem or "unknown_key", check.key_id)
    record = check.record
    if not route.required_scopes <= frozenset(record.scopes):
        return _deny(403, "insufficient_scope", record.key_id)
    upstream = (
        (KEY_ID_HEADER, record.key_id),
        (SUBJECT_HEADER, "key:" + record.key_id),
        (TENANT_HEADER, record.tenant),
        (ROLES_HEADER, ",".join(record.scopes)),
    )
    return Decision(True, 200, "ok", upstream, b"", record.key_id)


def decide_request(headers: Mapping[str, str], keyring: Keyring, now: float) -> Decision:
    """The whole decision for one forwarded request: find the key, check it, apply the
    route's context."""
    presented = credential(headers)
    check = None if presented is None else keyring.verify(presented, now)
    return decide(check, RouteContext.from_headers(headers))
