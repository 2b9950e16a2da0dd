"""The red team's cases against identity at the edge, through real Envoy: tokens built wrong on
purpose, tokens in odd places, paths and methods as upstreams read them, forged identity and
address headers, HTTP/2, killed and fed processes. ``test_jwt.py``, ``test_policy.py`` and
``test_edge.py`` hold the classes the issue names; these are the cases around them.

Every refusal is checked twice: the status (and reason) the client gets, and that the
recording upstream never saw the request. One control plane and one Envoy serve the module
(``attack_gateway.py``); requests go out as written (``raw_http.py``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.tokens import b64url, in_, unsigned_token

from .attack_gateway import (
    CORP_ISS,
    DROP,
    HEADER_LIMIT_KB,
    TENANT_ISS,
    AttackGateway,
    Keys,
    gateway_config,
    start,
)
from .harness import wait_until, write_config
from .raw_http import Reply, http1, http2

pytestmark = pytest.mark.integration

#: Every token a test sent: none may ever show up in a log (the last tests check).
SENT: set[str] = set()
_ids = iter(range(1_000_000))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackGateway]:
    yield from start(tmp_path_factory.mktemp("attacks"))


def _path(prefix: str) -> str:
    """A path of its own per request, so the upstream's record answers for this one only."""
    return f"{prefix}{next(_ids)}"


def _send(
    gw: AttackGateway,
    path: str,
    token: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    listener: str = "main",
) -> Reply:
    sent = list(headers or [])
    if token is not None:
        SENT.add(token)
        sent.append(("authorization", f"Bearer {token}"))
    return http1(gw.ports[listener], path, sent, method)


def _reason(gw: AttackGateway, path: str, reply: Reply) -> str:
    """The reason of a 401, after checking it is one and the upstream never saw the request."""
    assert reply.status == 401, (reply.status, reply.body)
    assert gw.seen(path.split("?")[0]) == [], "a refused request reached the upstream"
    doc = json.loads(reply.body)
    assert doc["error"] == "unauthorized" and doc["request_id"] == reply.headers["x-request-id"]
    reason: str = doc["reason"]
    return reason


def _identity(gw: AttackGateway, path: str) -> dict[str, str]:
    """The x-meshgate-* headers the upstream got with the one request to ``path``."""
    [seen] = gw.seen(path.split("?")[0])
    return {k: v for k, v in seen.header_lines if k.startswith("x-meshgate-")}


def _raw_header(claims: str, keys: Keys, header: str | None = None) -> str:
    """A token signed by corp over a header and payload given as JSON text (duplicate members,
    a BOM, trailing garbage: what no JSON library writes)."""
    head = header if header is not None else '{"alg":"RS256","typ":"JWT","kid":"corp-1"}'
    signing_input = f"{b64url(head.encode())}.{b64url(claims.encode())}"
    return f"{signing_input}.{b64url(keys.corp.signature(signing_input.encode()))}"


def _claims_text(**extra: Any) -> str:
    base = {"iss": CORP_ISS, "aud": "shop", "sub": "alice", "exp": in_(3600), **extra}
    return json.dumps(base)[1:-1]


Token = Callable[[Keys], str]
#: The identity headers of a valid token of ``Keys.claims``.
READER = {
    "x-meshgate-subject": "alice",
    "x-meshgate-issuer": "corp",
    "x-meshgate-roles": '["reader"]',
}
C = Keys.claims

#: (id, token, reason): tokens refused with 401 that ``test_jwt.py`` does not already send.
REFUSED: list[tuple[str, Token, str]] = [
    # alg: any spelling but the issuer's own
    ("alg-trailing-space", lambda k: k.corp.sign(C(), {"alg": "RS256 "}), "algorithm_not_allowed"),
    ("alg-lower-case", lambda k: k.corp.sign(C(), {"alg": "rs256"}), "algorithm_not_allowed"),
    ("alg-null", lambda k: k.corp.sign(C(), {"alg": None}), "token_malformed"),
    ("alg-list", lambda k: k.corp.sign(C(), {"alg": ["RS256"]}), "token_malformed"),
    ("alg-number", lambda k: k.corp.sign(C(), {"alg": 256}), "token_malformed"),
    ("alg-missing", lambda k: k.corp.sign(C(), drop=("alg",)), "token_malformed"),
    # kid: only a string, only the issuer's own keys
    ("kid-null", lambda k: k.corp.sign(C(), {"kid": None}), "token_malformed"),
    ("kid-object", lambda k: k.corp.sign(C(), {"kid": {"kid": "corp-1"}}), "token_malformed"),
    ("kid-list", lambda k: k.corp.sign(C(), {"kid": ["corp-1"]}), "token_malformed"),
    ("kid-of-other-issuer", lambda k: k.tenant.sign(C()), "unknown_key"),
    ("kid-other-signed-corp", lambda k: k.corp.sign(C(), {"kid": "tenant-1"}), "unknown_key"),
    # duplicate JSON members: refused, whichever copy comes first
    (
        "header-alg-twice-none-first",
        lambda k: _raw_header(_claims_text().join("{}"), k, '{"alg":"none","alg":"RS256"}'),
        "token_malformed",
    ),
    (
        "header-alg-twice-none-last",
        lambda k: _raw_header(_claims_text().join("{}"), k, '{"alg":"RS256","alg":"none"}'),
        "token_malformed",
    ),
    (
        "header-crit-twice",
        lambda k: _raw_header(
            _claims_text().join("{}"), k, '{"alg":"RS256","crit":["x"],"crit":null}'
        ),
        "token_malformed",
    ),
    (
        "payload-sub-twice",
        lambda k: _raw_header('{"sub":"mallory",' + _claims_text() + "}", k),
        "token_malformed",
    ),
    (
        "payload-iss-twice",
        lambda k: _raw_header('{"iss":"https://evil.example",' + _claims_text() + "}", k),
        "token_malformed",
    ),
    (
        "payload-roles-twice",
        lambda k: _raw_header('{"roles":["admin"],' + _claims_text(roles=["x"]) + "}", k),
        "token_malformed",
    ),
    ("payload-bom", lambda k: _raw_header("\ufeff{" + _claims_text() + "}", k), "token_malformed"),
    (
        "payload-garbage-after",
        lambda k: _raw_header("{" + _claims_text() + "} x", k),
        "token_malformed",
    ),
    ("payload-array", lambda k: _raw_header("[1]", k), "token_malformed"),
    ("header-array", lambda k: _raw_header("{}", k, '["RS256"]'), "token_malformed"),
    # members that bring keys or extensions, even empty or null
    ("crit-empty", lambda k: k.corp.sign(C(), {"crit": []}), "crit_header"),
    ("crit-null", lambda k: k.corp.sign(C(), {"crit": None}), "crit_header"),
    ("b64-false", lambda k: k.corp.sign(C(), {"b64": False, "crit": ["b64"]}), "crit_header"),
    ("jku-null", lambda k: k.corp.sign(C(), {"jku": None}), "key_url"),
    ("jwk-empty", lambda k: k.corp.sign(C(), {"jwk": ""}), "embedded_key"),
    ("x5c-empty", lambda k: k.corp.sign(C(), {"x5c": []}), "embedded_key"),
    # base64: padding in a signed segment, the standard alphabet
    (
        "padding-in-header",
        lambda k: k.corp_token().replace(".", "==.", 1),
        "token_malformed",
    ),
    (
        "standard-alphabet",
        lambda k: k.corp_token(pad="\xfb\xff" * 40).replace("-", "+").replace("_", "/"),
        "token_malformed",
    ),
    # issuer and audience: exactly
    ("iss-trailing-slash", lambda k: k.corp.sign(C(CORP_ISS + "/")), "issuer_not_allowed"),
    ("iss-of-prefix-issuer", lambda k: k.corp.sign(C(TENANT_ISS)), "issuer_not_allowed"),
    ("iss-list", lambda k: k.corp.sign(C([CORP_ISS])), "token_malformed"),
    ("iss-null", lambda k: k.corp.sign(C(None)), "token_malformed"),
    ("aud-list-without-ours", lambda k: k.corp_token(aud=["a", "shop2"]), "audience_not_allowed"),
    ("aud-empty-list", lambda k: k.corp_token(aud=[]), "audience_not_allowed"),
    ("aud-missing", lambda k: k.corp_token(aud=DROP), "audience_not_allowed"),
    ("aud-other-case", lambda k: k.corp_token(aud="SHOP"), "audience_not_allowed"),
    ("aud-number", lambda k: k.corp_token(aud=1), "token_malformed"),
    # times: numbers in range only
    ("exp-string", lambda k: k.corp_token(exp=str(in_(3600))), "token_malformed"),
    ("exp-null", lambda k: k.corp_token(exp=None), "token_malformed"),
    ("exp-bool", lambda k: k.corp_token(exp=True), "token_malformed"),
    ("exp-negative", lambda k: k.corp_token(exp=-1), "token_malformed"),
    ("exp-zero", lambda k: k.corp_token(exp=0), "verification_failed"),
    ("exp-2^64", lambda k: k.corp_token(exp=2**64), "token_malformed"),
    ("exp-1e30", lambda k: k.corp_token(exp=10**30), "token_malformed"),
    ("exp-float-past", lambda k: k.corp_token(exp=in_(-3600) + 0.5), "token_expired"),
    ("nbf-string", lambda k: k.corp_token(nbf="now"), "token_malformed"),
    ("nbf-float-ahead", lambda k: k.corp_token(nbf=in_(600) + 0.9), "token_not_yet_valid"),
    ("iat-string", lambda k: k.corp_token(iat="x"), "token_malformed"),
    ("iat-negative", lambda k: k.corp_token(iat=-5), "token_malformed"),
    ("iat-float-ahead", lambda k: k.corp_token(iat=in_(600) + 0.5), "issued_in_future"),
    # the subject: a string
    ("sub-null", lambda k: k.corp_token(sub=None), "token_malformed"),
    ("sub-number", lambda k: k.corp_token(sub=123), "token_malformed"),
    ("sub-list", lambda k: k.corp_token(sub=["mallory"]), "token_malformed"),
    # claims that become headers: nothing a header cannot carry as it is
    ("sub-crlf", lambda k: k.corp_token(sub="alice\r\nx-meshgate-roles: admin"), "claim_invalid"),
    ("sub-lf", lambda k: k.corp_token(sub="alice\nx: 1"), "claim_invalid"),
    ("sub-nul", lambda k: k.corp_token(sub="alice\x00root"), "claim_invalid"),
    ("sub-control", lambda k: k.corp_token(sub="alice\x7f"), "claim_invalid"),
    ("sub-leading-space", lambda k: k.corp_token(sub=" mallory"), "claim_invalid"),
    ("sub-trailing-tab", lambda k: k.corp_token(sub="alice\t"), "claim_invalid"),
    ("email-crlf", lambda k: k.corp_token(email="a@x\r\nx-evil: 1"), "claim_invalid"),
    ("tenant-crlf", lambda k: k.corp_token(org={"id": "acme\r\nx: 1"}), "claim_invalid"),
    ("tenant-list", lambda k: k.corp_token(org={"id": ["acme", "evil"]}), "claim_invalid"),
    ("tenant-number", lambda k: k.corp_token(org={"id": 5}), "claim_invalid"),
]


@pytest.mark.parametrize(("token", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_token_is_refused(gw: AttackGateway, token: Token, reason: str) -> None:
    path = _path("/orders/refused-")
    assert _reason(gw, path, _send(gw, path, token(gw.keys))) == reason


#: (id, token): tokens that pass, and reach the upstream as alice, no one else.
ACCEPTED: list[tuple[str, Token]] = [
    ("aud-list-with-ours", lambda k: k.corp_token(aud=["other", "shop"])),
    ("nbf-now", lambda k: k.corp_token(nbf=in_(0))),
    ("exp-float", lambda k: k.corp_token(exp=in_(3600) + 0.5)),
    ("typ-other", lambda k: k.corp.sign(C(), {"typ": "at+jwt"})),
    ("Crit-is-not-crit", lambda k: k.corp.sign(C(), {"Crit": ["x"]})),
    ("kid-missing", lambda k: k.corp.sign(C(), drop=("kid",))),
    # Envoy's parser skips empty segments and reads '=' padding of the signature: another
    # spelling of the same signed header and payload, never another token (docs/security.md)
    ("signature-padded", lambda k: k.corp_token() + "=="),
    ("trailing-dot", lambda k: k.corp_token() + "."),
    ("leading-dot", lambda k: "." + k.corp_token()),
]


@pytest.mark.parametrize("token", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_token_passes_as_itself(gw: AttackGateway, token: Token) -> None:
    path = _path("/orders/accepted-")
    forged = [("x-meshgate-subject", "mallory"), ("x-meshgate-issuer", "partner")]
    assert _send(gw, path, token(gw.keys), forged).status == 200
    assert _identity(gw, path) == READER


def test_a_token_without_subject_gives_no_subject_and_no_forged_one(gw: AttackGateway) -> None:
    path = _path("/orders/no-sub-")
    forged = [("x-meshgate-subject", "root"), ("X-Meshgate-Subject", "root")]
    assert _send(gw, path, gw.keys.corp_token(sub=DROP), forged).status == 200
    assert _identity(gw, path) == {k: v for k, v in READER.items() if k != "x-meshgate-subject"}


# --- where the token is ------------------------------------------------------------------------


def _locations(
    good: str, bad: str, forged: str
) -> list[tuple[str, str, list[tuple[str, str]], int | str]]:
    """(id, path prefix, headers, expected status or reason) for a ``good`` token, a ``bad``
    one (signed by another issuer's key) and a ``forged`` one (unsigned)."""
    auth = "authorization"
    return [
        (
            "two-headers-good-bad",
            "/orders/",
            [(auth, f"Bearer {good}"), (auth, f"Bearer {bad}")],
            "token_malformed",
        ),
        (
            "two-headers-bad-good",
            "/orders/",
            [(auth, f"Bearer {bad}"), (auth, f"Bearer {good}")],
            "token_malformed",
        ),
        ("two-headers-good-good", "/orders/", [(auth, f"Bearer {good}")] * 2, "token_malformed"),
        ("comma-joined", "/orders/", [(auth, f"Bearer {good}, Bearer {bad}")], "token_malformed"),
        ("scheme-lower-case", "/orders/", [(auth, f"bearer {good}")], "token_missing"),
        ("scheme-tab", "/orders/", [(auth, f"Bearer\t{good}")], "token_missing"),
        ("scheme-basic", "/orders/", [(auth, f"Basic {good}")], "token_missing"),
        ("header-name-upper-case", "/orders/", [("AUTHORIZATION", f"Bearer {good}")], 200),
        ("scheme-two-spaces", "/orders/", [(auth, f"Bearer  {good}")], 200),
        ("token-then-junk", "/orders/", [(auth, f"Bearer {good} junk")], "verification_failed"),
        ("other-header", "/orders/", [("x-jwt-assertion", good)], "token_missing"),
        ("envoy-default-query", f"/orders/x?access_token={good}&", [], "token_missing"),
        (
            "header-good-query-bad",
            f"/multi/x?access_token={bad}&",
            [(auth, f"Bearer {good}")],
            "verification_failed",
        ),
        (
            "header-bad-query-good",
            f"/multi/x?access_token={good}&",
            [(auth, f"Bearer {bad}")],
            "verification_failed",
        ),
        (
            "query-bad-then-good",
            f"/multi/x?access_token={bad}&access_token={good}&",
            [],
            "verification_failed",
        ),
        ("query-upper-case-name", f"/multi/x?ACCESS_TOKEN={good}&", [], "token_missing"),
        ("query-after-semicolon", f"/multi/x?a=1;access_token={good}&", [], "token_missing"),
        (
            "cookie-twice",
            "/cookie/",
            [("cookie", f"session={good}; session={forged}")],
            "duplicate_token",
        ),
        (
            "cookie-twice-spaced",
            "/cookie/",
            [("cookie", f"a=1; session={good};  session ={forged}")],
            "duplicate_token",
        ),
        (
            "cookie-two-lines",
            "/cookie/",
            [("cookie", f"session={good}"), ("cookie", f"session={forged}")],
            "duplicate_token",
        ),
        (
            "cookie-forged-first",
            "/cookie/",
            [("cookie", f"session={forged}; session={good}")],
            "token_malformed",
        ),
        (
            "cookie-look-alikes",
            "/cookie/",
            [("cookie", f"mysession=x; session={good}; session_id=y")],
            200,
        ),
    ]


@pytest.mark.parametrize("name", [case[0] for case in _locations("good", "bad", "forged")])
def test_token_locations(gw: AttackGateway, name: str) -> None:
    k = gw.keys
    good, bad = k.corp_token(), k.tenant.sign(C(), {"kid": "corp-1"})
    forged = unsigned_token(C(sub="root"))
    SENT.update((good, bad, forged))
    [(prefix, headers, expected)] = [c[1:] for c in _locations(good, bad, forged) if c[0] == name]
    base, _, query = prefix.partition("?")
    path = _path(base) + (f"?{query}" if query else "")
    reply = _send(gw, path, headers=headers)
    if expected == 200:
        assert reply.status == 200, name
        assert _identity(gw, path)["x-meshgate-subject"] == "alice", name
    else:
        assert _reason(gw, path, reply) == expected, name


def test_every_copy_of_a_query_token_is_stripped(gw: AttackGateway) -> None:
    """Envoy verifies the first copy of a parameter named twice; the others never reach the
    upstream either (query tokens are never forwarded: the config refuses it)."""
    good, forged = gw.keys.corp_token(), unsigned_token(C(sub="root"))
    SENT.update((good, forged))
    path = _path("/multi/strip-")
    reply = _send(gw, f"{path}?access_token={good}&page=2&access_token={forged}&access%5Ftoken=x")
    assert reply.status == 200
    [seen] = gw.seen(path)
    assert seen.query == "page=2"


# --- paths and methods, as upstreams read them ---------------------------------------------------

#: (caller, method, path, status) on the 'orders' policy: reader may GET /orders/** and
#: /legacy/** but not /orders/*/refund or /legacy/internal/**; admin may do anything on
#: /admin/** but DELETE /admin/audit/**. Each path is a way an upstream may read a denied one.
PATHS: list[tuple[str, str, str, int]] = [
    ("reader", "GET", "/orders/7/refund", 403),
    ("reader", "GET", "/orders/7/refund/", 403),  # Express, Spring MVC < 6: the same
    ("reader", "GET", "/orders/7/Refund", 403),  # Express, IIS: the same
    ("reader", "GET", "/orders/7/refund;jsessionid=1", 403),  # Tomcat, Jetty: the same
    ("reader", "GET", "/orders;x/7;y/REFUND;z/", 403),
    ("reader", "GET", "/orders/7/refund%2F", 403),  # unescaped: '/orders/7/refund/'
    ("reader", "GET", "/orders/7%2Frefund", 403),
    ("reader", "GET", "/orders/7%5Crefund", 403),
    ("reader", "GET", "/orders/7\\refund", 403),
    ("reader", "GET", "/orders/7//refund", 403),
    ("reader", "GET", "/orders/7/./refund", 403),
    ("reader", "GET", "/orders/7/x/../refund", 403),
    ("reader", "GET", "/orders/7/x/%2e%2E/refund", 403),
    ("reader", "GET", "/orders/7/%72ef%75nd", 403),
    ("reader", "GET", "/orders/7/refund?", 403),
    ("reader", "GET", "/orders/7/refund?x=/", 403),
    ("reader", "GET", "http://gateway/orders/7/refund", 403),
    ("reader", "HEAD", "/orders/7/refund", 403),
    ("reader", "GET", "/orders/7/refund#x", 400),
    ("reader", "GET", "/orders/7/refund%00", 400),
    ("reader", "GET", "/orders/7/refunds", 200),  # another resource
    ("reader", "GET", "/admin/x", 403),
    ("reader", "GET", "/orders/../admin/x", 403),
    ("reader", "GET", "/orders/%2e%2e/admin/x", 403),
    ("reader", "GET", "/orders/..%2Fadmin/x", 403),
    ("reader", "GET", "/orders/..;/admin/x", 403),  # Tomcat's '..;': resolved as '..'
    ("reader", "GET", "//admin/x", 403),
    ("reader", "GET", "/ADMIN/x", 403),
    ("reader", "GET", "/orders/" + "a" * 8000, 200),
    ("reader", "GET", "/legacy/internal/x", 403),
    ("reader", "GET", "/LEGACY/Internal/x", 403),  # a case-insensitive route
    ("reader", "GET", "/legacy/internal;x/y", 403),
    ("reader", "GET", "/legacy/public/x", 200),
    ("admin", "DELETE", "/admin/audit/1", 403),
    ("admin", "DELETE", "/admin/Audit/1", 403),
    ("admin", "DELETE", "/admin/audit;x/1", 403),
    ("admin", "DELETE", "/admin/audit/", 403),
    ("admin", "GET", "/admin/audit/1", 200),
    ("admin", "delete", "/admin/audit/1", 400),  # Envoy's HTTP/1 codec: methods are upper case
    ("reader", "get", "/orders/1", 400),
]


def _callers(k: Keys) -> dict[str, str]:
    tokens = {"reader": k.corp_token(), "admin": k.corp_token(sub="ada", roles=["admin"])}
    SENT.update(tokens.values())
    return tokens


@pytest.mark.parametrize(("caller", "method", "path", "status"), PATHS)
def test_paths_and_methods(
    gw: AttackGateway, caller: str, method: str, path: str, status: int
) -> None:
    marker = f"m{next(_ids)}"
    headers = [("authorization", f"Bearer {_callers(gw.keys)[caller]}"), ("x-case", marker)]
    reply = http1(gw.ports["main"], path, headers, method)
    assert reply.status == status, reply.body
    reached = [s for s in gw.upstream.requests() if ("x-case", marker) in s.header_lines]
    assert len(reached) == (1 if status == 200 else 0)


def test_http2_lower_case_method_cannot_dodge_a_deny_rule(gw: AttackGateway) -> None:
    """Envoy's HTTP/2 codec passes ':method: delete' on, and Werkzeug or ASP.NET serve it
    as DELETE: deny rules and route methods match methods in any case."""
    admin = _callers(gw.keys)["admin"]
    for method in ("delete", "Delete", "DELETE"):
        path = _path("/admin/audit/h2-")
        reply = http2(gw.ports["main"], path, [("authorization", f"Bearer {admin}")], method)
        assert reply.status == 403, method
        assert gw.seen(path) == []
    path = _path("/orders/h2-")
    reader = _callers(gw.keys)["reader"]
    reply = http2(gw.ports["main"], path, [("authorization", f"Bearer {reader}")], "get")
    assert reply.status == 403  # a grant for GET is not one for 'get'
    reply = http2(gw.ports["main"], path + ";x", [("authorization", f"Bearer {reader}")])
    assert reply.status == 200


def test_http2_forged_identity_and_malformed_headers(gw: AttackGateway) -> None:
    reader = ("authorization", f"Bearer {_callers(gw.keys)['reader']}")
    path = _path("/orders/h2-forged-")
    forged = [("x-meshgate-subject", "root"), ("x-meshgate-tenant", "t"), ("x-user-email", "e")]
    assert http2(gw.ports["main"], path, [reader, *forged]).status == 200
    assert _identity(gw, path) == READER
    assert "x-user-email" not in gw.seen(path)[0].headers
    # Header names HTTP/2 forbids end the stream or the connection, never reach the upstream.
    bad = [
        [("X-Meshgate-Subject", "root")],
        [("x-meshgate-subject ", "root")],
        [(":x-meshgate-subject", "root")],
        [("x-meshgate_subject", "root")],
        [("x-foo", "a\r\nx-meshgate-subject: root")],
        [("connection", "x-meshgate-subject")],
        [(f"x-h{i}", "v") for i in range(150)],  # more than Envoy's 100 headers
    ]
    for headers in bad:
        path = _path("/orders/h2-bad-")
        reply = http2(gw.ports["main"], path, [reader, *headers])
        assert reply.status in (0, 400, 431), headers[0]
        assert gw.seen(path) == []
    path = _path("/orders/h2-two-")
    bad_token = gw.keys.tenant.sign(C(), {"kid": "corp-1"})
    reply = http2(gw.ports["main"], path, [reader, ("authorization", f"Bearer {bad_token}")])
    assert reply.status == 401 and gw.seen(path) == []


# --- forged identity and address headers ------------------------------------------------------


@pytest.mark.parametrize("listener", ["main", "cidrs"])
def test_forged_identity_headers_on_routes_without_a_policy(
    gw: AttackGateway, listener: str
) -> None:
    prefix = "/public/" if listener == "main" else "/any/"
    path = _path(prefix)
    forged = [
        ("x-meshgate-subject", "root"),
        ("X-MESHGATE-ROLES", '["admin"]'),
        ("X-Meshgate-Tenant", "other"),
        ("x-meshgate-subject", "root2"),
        ("x-user-email", "root@evil.example"),  # an issuer's claim header
        ("X-User-Email", "root@evil.example"),
    ]
    assert _send(gw, path, headers=forged, listener=listener).status == 200
    [seen] = gw.seen(path)
    assert [k for k, _ in seen.header_lines if k.startswith(("x-meshgate", "x-user"))] == []
    for name in ("x-meshgate_subject", "x_user_email"):  # 'headers_with_underscores: reject'
        path = _path(prefix)
        assert _send(gw, path, headers=[(name, "root")], listener=listener).status == 400
        assert gw.seen(path) == []


_EDGE = [
    ("x-envoy-external-address", "10.0.0.1"),
    ("x-envoy-original-path", "/admin"),
    ("x-envoy-decorator-operation", "admin"),
    ("x-envoy-downstream-service-cluster", "trusted"),
    ("x-envoy-internal", "true"),
]


@pytest.mark.parametrize(("listener", "client"), [("hops", "127.0.0.1"), ("cidrs", "198.51.100.7")])
def test_the_upstream_learns_the_client_address_from_envoy_only(
    gw: AttackGateway, listener: str, client: str
) -> None:
    """x-envoy-external-address is the address Envoy settled on, in every client_address
    mode; the x-envoy-* headers Envoy sets itself are never the client's."""
    path = _path("/addr/")
    xff = [] if listener == "hops" else [("x-forwarded-for", client)]
    assert _send(gw, path, headers=[*_EDGE, *xff], listener=listener).status == 200
    [seen] = gw.seen(path)
    envoy = {k: v for k, v in seen.header_lines if k.startswith("x-envoy-") and "timeout" not in k}
    assert envoy == {"x-envoy-external-address": client}


#: (listener, path, x-forwarded-for lines, status): 'hops' trusts one proxy (the test plays
#: it: the last entry is the client), 'cidrs' trusts loopback proxies; both deny 10.66/16,
#: '/inside/' on hops allows 10/8 only.
XFF: list[tuple[str, str, list[str], int]] = [
    ("hops", "/x", ["10.66.1.1"], 403),
    ("hops", "/x", ["::ffff:10.66.1.1"], 403),  # a dual-stack proxy's spelling of 10.66.1.1
    ("hops", "/x", ["::FFFF:10.66.1.1"], 403),
    ("hops", "/x", ["0:0:0:0:0:ffff:a42:101"], 403),
    ("hops", "/x", ["2001:db8:bad::1"], 403),
    ("hops", "/x", ["2001:DB8:BAD:0::1"], 403),
    ("hops", "/x", [" 10.66.1.1 "], 403),
    ("hops", "/x", ["198.51.100.1", "10.66.1.1"], 403),  # the last line is the proxy's
    ("hops", "/x", ["10.66.1.1", "198.51.100.1"], 200),
    ("hops", "/x", ["10.66.1.1, 198.51.100.1"], 200),
    ("hops", "/inside/x", ["10.1.1.1"], 200),
    ("hops", "/inside/x", ["::ffff:10.1.1.1"], 200),
    ("hops", "/inside/x", ["2001:db8::1"], 200),
    ("hops", "/inside/x", ["10.1.1.1", "198.51.100.1"], 403),
    # not an address to Envoy: the client is the peer (127.0.0.1), outside 10/8
    ("hops", "/inside/x", ["10.1.1.1:80"], 403),
    ("hops", "/inside/x", ["010.001.001.001"], 403),
    ("hops", "/inside/x", ["garbage"], 403),
    ("hops", "/inside/x", [], 403),
    ("cidrs", "/x", ["10.66.1.1"], 403),
    ("cidrs", "/x", ["::ffff:10.66.1.1"], 403),
    ("cidrs", "/x", ["10.66.1.1, ::ffff:127.0.0.1"], 403),  # a dual-stack trusted proxy
    ("cidrs", "/x", ["10.66.1.1", "127.0.0.5"], 403),
    ("cidrs", "/x", ["198.51.100.1, 10.66.1.1, 127.0.0.5"], 403),
    ("cidrs", "/x", ["10.66.1.1, 198.51.100.1"], 200),
]


@pytest.mark.parametrize(("listener", "path", "xff", "status"), XFF)
def test_forwarded_for_cannot_pass_an_ip_rule(
    gw: AttackGateway, listener: str, path: str, xff: list[str], status: int
) -> None:
    full = _path(path)
    reply = _send(gw, full, headers=[("x-forwarded-for", v) for v in xff], listener=listener)
    assert reply.status == status
    assert len(gw.seen(full)) == (1 if status == 200 else 0)
    if status == 403:
        assert json.loads(reply.body)["error"] == "ip_denied"


@pytest.mark.parametrize(
    ("address", "family", "path", "status"),
    [
        ("127.0.0.1", socket.AF_INET, "/v4-denied/", 403),  # '::ffff:127.0.0.1' to Envoy
        ("127.0.0.1", socket.AF_INET, "/v4-only/", 200),
        ("::1", socket.AF_INET6, "/v4-denied/", 200),
        ("::1", socket.AF_INET6, "/v4-only/", 403),
    ],
)
def test_dual_stack_listener_applies_ipv4_rules_to_ipv4_clients(
    gw: AttackGateway, address: str, family: socket.AddressFamily, path: str, status: int
) -> None:
    full = _path(path)
    reply = http1(gw.ports["dual"], full, [], host=address, family=family)
    assert reply.status == status
    assert len(gw.seen(full)) == (1 if status == 200 else 0)


def test_request_headers_beyond_the_limits(gw: AttackGateway) -> None:
    token = gw.keys.corp_token()
    SENT.add(token)
    many = [(f"x-h{i}", "v") for i in range(120)]  # Envoy's default: 100 headers
    big = [(f"x-h{i}", "v" * 1000) for i in range(HEADER_LIMIT_KB + 1)]
    for headers in (many, big):
        path = _path("/orders/limits-")
        assert _send(gw, path, token, headers).status == 431
        assert gw.seen(path) == []


# --- processes killed, files made hostile -----------------------------------------------------


def _enforced(gw: AttackGateway) -> None:
    """What must hold whatever happens to the control plane: tokens verified, denials
    denied, forged headers stripped, IP rules applied."""
    k = gw.keys
    path = _path("/orders/kept-")
    assert _send(gw, path, k.corp_token(), [("x-meshgate-subject", "root")]).status == 200
    assert _identity(gw, path) == READER
    path = _path("/orders/kept-")
    assert _reason(gw, path, _send(gw, path, unsigned_token(C()))) == "token_malformed"
    path = _path("/orders/kept-")
    assert _reason(gw, path, _send(gw, path, k.corp_token(sub=" alice"))) == "claim_invalid"
    path = _path("/orders/7/refund;")
    assert _send(gw, path, k.corp_token()).status == 403 and gw.seen(path) == []
    path = _path("/x/")
    assert (
        _send(gw, path, headers=[("x-forwarded-for", "::ffff:10.66.0.1")], listener="hops").status
        == 403
    )


def test_a_killed_control_plane_changes_nothing_at_the_edge(gw: AttackGateway) -> None:
    gw.control_plane.kill()
    try:
        _enforced(gw)
    finally:
        gw.control_plane.start()
    _enforced(gw)


def test_a_hostile_config_file_keeps_the_last_good_policy(gw: AttackGateway) -> None:
    """A file that does not load (here: a deny rule dropped for a role nobody defined, and
    garbage) is refused as a whole; the policy in force stays."""
    path = Path(gw.control_plane.config_path)
    good = path.read_bytes()
    config = gateway_config(gw.keys, gw.ports, gw.upstream.port)
    config["policies"][0]["deny"] = [{"roles": ["raeder"], "paths": ["/orders/*/refund"]}]
    try:
        for hostile in (config, b"\x00\xff{[: not yaml"):
            if isinstance(hostile, bytes):
                path.write_bytes(hostile)
            else:
                write_config(path, hostile)
            wait_until(lambda: gw.control_plane.status()["config"]["errors"], 15, "rejected")
            _enforced(gw)
    finally:
        path.write_bytes(good)
        wait_until(lambda: not gw.control_plane.status()["config"]["errors"], 15, "accepted")


def test_no_token_reaches_a_log(gw: AttackGateway) -> None:
    """Tokens in the header, the query and a cookie, valid or refused: none of them in Envoy's
    access log or the control plane's log (this module's every token included)."""
    k = gw.keys
    tokens = [k.corp_token(), k.corp_token(sub="alice\r\n"), unsigned_token(C())]
    SENT.update(tokens)
    for token in tokens:
        _send(gw, _path("/orders/log-"), token)
        _send(gw, _path("/multi/log-") + f"?access_token={token}")
        _send(gw, _path("/cookie/log-"), headers=[("cookie", f"session={token}")])
    time.sleep(0.5)  # the access log is flushed asynchronously
    logs = Path(gw.envoy.stdout.name).read_text() + gw.control_plane.logs()
    signatures = {t.rsplit(".", 1)[-1] for t in SENT if t.count(".") >= 2}
    leaked = [s for s in signatures if len(s) > 20 and s in logs]
    assert leaked == []
    assert "eyJ" not in logs  # no JOSE header either (base64url of '{"')
