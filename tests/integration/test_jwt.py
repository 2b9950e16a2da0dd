"""JWT policies through real Envoy: valid tokens of two issuers pass with the identity headers;
every attack class is answered 401 with a reason and never reaches the upstream.

One control plane and one Envoy serve the module (``jwt_gateway.py`` builds the config and the
identity providers); the recording upstream shows what got through and with which headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.support.tokens import (
    SigningKey,
    b64url,
    hmac_token,
    in_,
    json_serialization,
    segment,
    unsigned_token,
)

from .harness import wait_until
from .jwt_gateway import GHOST_ISS, HEADER_LIMIT_KB, PARTNER_ISS, Idp, JwtGateway, start

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JwtGateway]:
    yield from start(tmp_path_factory.mktemp("jwt"))


def _refused(gw: JwtGateway, path: str, status: int, headers: dict[str, str], body: bytes) -> str:
    """The reason of a 401, after checking everything a refusal must be."""
    assert status == 401, body
    doc = json.loads(body)
    assert doc["error"] == "unauthorized"
    assert doc["request_id"] == headers["x-request-id"]
    assert headers["content-type"] == "application/json"
    challenge = "Bearer" if doc["reason"] == "token_missing" else 'Bearer error="invalid_token"'
    assert headers["www-authenticate"] == challenge
    assert gw.seen(path) == [], "a refused request reached the upstream"
    reason: str = doc["reason"]
    return reason


def _header_values(gw: JwtGateway, path: str, name: str) -> list[str]:
    [seen] = gw.seen(path)
    return [v for k, v in seen.header_lines if k == name]


# --- valid tokens ------------------------------------------------------------------------------


def test_valid_tokens_of_two_issuers_pass_with_identity_headers(gw: JwtGateway) -> None:
    token = gw.idp.corp_token(
        org={"id": "acme", "plan": "gold"},
        roles=["admin", "dev,ops"],
        scope="orders:read orders:write",
        email="alice@acme.example",
    )
    status, _, _ = gw.get("/orders/rsa", token)
    assert status == 200
    [seen] = gw.seen("/orders/rsa")
    assert seen.headers["x-meshgate-subject"] == "alice"
    assert seen.headers["x-meshgate-tenant"] == "acme"  # nested claim org.id
    assert seen.headers["x-meshgate-issuer"] == "corp"
    # One value per role claim, each a JSON list; the space-separated scope arrives as a list.
    assert _header_values(gw, "/orders/rsa", "x-meshgate-roles") == [
        '["admin","dev,ops"]',
        '["orders:read","orders:write"]',
    ]
    assert seen.headers["x-user-email"] == "alice@acme.example"
    assert json.loads(seen.headers["x-org"]) == {"id": "acme", "plan": "gold"}
    assert "authorization" not in seen.headers  # forward_token defaults to false

    status, _, _ = gw.get("/orders/ec", gw.idp.partner_token(client_id="svc-billing"))
    assert status == 200
    [seen] = gw.seen("/orders/ec")
    assert seen.headers["x-meshgate-subject"] == "svc-billing"
    assert seen.headers["x-meshgate-issuer"] == "partner"
    for absent in ("x-meshgate-tenant", "x-meshgate-roles", "x-user-email"):
        assert absent not in seen.headers


def test_forged_identity_headers_never_reach_the_upstream(gw: JwtGateway) -> None:
    forged = {
        "x-meshgate-subject": "root",
        "x-meshgate-tenant": "other",
        "x-meshgate-roles": '["admin"]',
        "x-meshgate-issuer": "corp",
        "x-user-email": "root@evil.example",
    }
    # The token has neither tenant, roles nor email: the forged copies must still go.
    status, _, _ = gw.get("/orders/forged", gw.idp.corp_token(), headers=forged)
    assert status == 200
    [seen] = gw.seen("/orders/forged")
    assert _header_values(gw, "/orders/forged", "x-meshgate-subject") == ["alice"]
    assert _header_values(gw, "/orders/forged", "x-meshgate-issuer") == ["corp"]
    for name in ("x-meshgate-tenant", "x-meshgate-roles", "x-user-email"):
        assert name not in seen.headers


def test_leeway_accepts_small_clock_skew(gw: JwtGateway) -> None:
    # corp's leeway is 5s: just expired, or issued "in 3 seconds" by a fast clock, still pass.
    assert gw.get("/skew/exp", gw.idp.corp_token(exp=in_(-2)))[0] == 200
    assert gw.get("/skew/iat", gw.idp.corp_token(iat=in_(3)))[0] == 200
    assert gw.get("/skew/nbf", gw.idp.corp_token(nbf=in_(3)))[0] == 200


def test_public_route_needs_no_token(gw: JwtGateway) -> None:
    status, _, body = gw.client.request("/healthz")
    assert (status, body) == (200, b"ok")
    assert gw.get("/public/page", headers={"x-meshgate-subject": "root"})[0] == 200
    # No policy here, yet a forged identity header is removed (the client-headers filter).
    assert "x-meshgate-subject" not in gw.seen("/public/page")[0].headers
    # A bad token on a public route is simply not looked at.
    assert gw.get("/public/other", "garbage")[0] == 200


# --- token locations and forwarding -------------------------------------------------------------


def test_token_in_a_cookie(gw: JwtGateway) -> None:
    cookie = f"theme=dark; session={gw.idp.corp_token()}"
    status, _, _ = gw.client.request("/cookie/a", headers={"cookie": cookie})
    assert status == 200
    assert gw.seen("/cookie/a")[0].headers["x-meshgate-issuer"] == "corp-cookie"
    # The same token in the Authorization header does not count on this route.
    headers, body = gw.get("/cookie/b", gw.idp.corp_token())[1:]
    assert _refused(gw, "/cookie/b", 401, headers, body) == "token_missing"


def test_token_in_a_query_parameter_is_stripped(gw: JwtGateway) -> None:
    status, _, _ = gw.client.request(f"/query/a?page=2&access_token={gw.idp.corp_token()}")
    assert status == 200
    [seen] = gw.seen("/query/a")
    assert seen.query == "page=2"
    assert seen.headers["x-meshgate-subject"] == "alice"


def test_forward_token_keeps_the_authorization_header(gw: JwtGateway) -> None:
    token = gw.idp.corp_token()
    assert gw.get("/forward/a", token)[0] == 200
    assert gw.seen("/forward/a")[0].headers["authorization"] == f"Bearer {token}"


def test_token_of_an_issuer_the_policy_does_not_accept(gw: JwtGateway) -> None:
    status, headers, body = gw.get("/query/partner", gw.idp.partner_token())
    assert _refused(gw, "/query/partner", status, headers, body) == "token_missing"


def test_issuer_whose_keys_were_never_fetched_refuses_every_token(gw: JwtGateway) -> None:
    token = gw.idp.corp.sign(gw.idp.claims(GHOST_ISS))
    status, headers, body = gw.get("/ghost/a", token)
    assert _refused(gw, "/ghost/a", status, headers, body) == "unknown_key"
    # Without a kid the one stand-in key is tried, and cannot verify anything.
    token = gw.idp.corp.sign(gw.idp.claims(GHOST_ISS), drop=("kid",))
    status, headers, body = gw.get("/ghost/b", token)
    assert _refused(gw, "/ghost/b", status, headers, body) == "unknown_key"


# --- refusals ----------------------------------------------------------------------------------


def test_missing_token(gw: JwtGateway) -> None:
    status, headers, body = gw.get("/orders/missing")
    assert _refused(gw, "/orders/missing", status, headers, body) == "token_missing"
    assert json.loads(body)["message"] == "this route needs a bearer token"


def _swap_payload(token: str, payload: str) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{payload}.{sig}"


def _without_exp(idp: Idp) -> str:
    claims = idp.claims()
    del claims["exp"]
    return idp.corp.sign(claims)


Attack = Callable[[Idp], str]
#: (id, token, reason): every class of the issue's attack list.
ATTACKS: list[tuple[str, Attack, str]] = [
    *[
        (f"alg-{alg}", lambda i, a=alg: unsigned_token(i.claims(), a), "token_malformed")
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    *[
        (f"alg-{alg}-signed", lambda i, a=alg: unsigned_token(i.claims(), a, "c2ln"), reason)
        for alg, reason in (("none", "algorithm_not_allowed"), ("nOnE", "algorithm_not_allowed"))
    ],
    (
        "hs256-public-pem",
        lambda i: hmac_token(i.corp.public_pem(), i.claims(), {"alg": "HS256", "kid": "corp-1"}),
        "verification_failed",
    ),
    (
        "hs256-public-jwk",
        lambda i: hmac_token(
            json.dumps(i.corp.public_jwk()).encode(), i.claims(), {"alg": "HS256"}
        ),
        "verification_failed",
    ),
    (
        "ps256-not-allowed",
        lambda i: SigningKey("corp-1", "PS256", i.corp.private).sign(i.claims()),
        "algorithm_not_allowed",
    ),
    (
        "rs512-not-allowed",
        lambda i: SigningKey("corp-1", "RS512", i.corp.private).sign(i.claims()),
        "algorithm_not_allowed",
    ),
    (
        "es256-for-rsa-issuer",
        lambda i: SigningKey("corp-1", "ES256", i.partner.private).sign(i.claims()),
        "verification_failed",
    ),
    (
        "embedded-jwk",
        lambda i: i.corp.sign(i.claims(), {"jwk": i.rogue.public_jwk()}),
        "embedded_key",
    ),
    (
        "embedded-jwk-self-signed",
        lambda i: i.rogue.sign(i.claims(), {"jwk": i.rogue.public_jwk()}),
        "verification_failed",
    ),
    ("jku", lambda i: i.corp.sign(i.claims(), {"jku": "https://evil.example/k"}), "key_url"),
    ("x5u", lambda i: i.corp.sign(i.claims(), {"x5u": "https://evil.example/c"}), "key_url"),
    ("x5c", lambda i: i.corp.sign(i.claims(), {"x5c": ["MIIBIjANBgkq"]}), "embedded_key"),
    ("kid-unknown", lambda i: i.corp.sign(i.claims(), {"kid": "corp-2"}), "unknown_key"),
    ("kid-path", lambda i: i.corp.sign(i.claims(), {"kid": "../../dev/null"}), "unknown_key"),
    ("kid-sql", lambda i: i.corp.sign(i.claims(), {"kid": "' OR 1=1--"}), "unknown_key"),
    ("kid-long", lambda i: i.corp.sign(i.claims(), {"kid": "k" * 4000}), "unknown_key"),
    ("kid-not-string", lambda i: i.corp.sign(i.claims(), {"kid": 1}), "token_malformed"),
    ("expired", lambda i: i.corp_token(exp=in_(-60)), "token_expired"),
    ("not-yet-valid", lambda i: i.corp_token(nbf=in_(600)), "token_not_yet_valid"),
    ("issued-in-future", lambda i: i.corp_token(iat=in_(600)), "issued_in_future"),
    ("exp-missing", _without_exp, "verification_failed"),
    ("exp-not-a-number", lambda i: i.corp_token(exp="tomorrow"), "token_malformed"),
    ("wrong-issuer", lambda i: i.corp_token(iss="https://evil.example"), "issuer_not_allowed"),
    ("wrong-audience", lambda i: i.corp_token(aud="admin-api"), "audience_not_allowed"),
    ("partner-iss-corp-key", lambda i: i.corp.sign(i.claims(PARTNER_ISS)), "unknown_key"),
    ("bad-signature", lambda i: i.rogue.sign(i.claims()), "verification_failed"),
    (
        "swapped-payload",
        lambda i: _swap_payload(i.corp_token(), segment(i.claims(sub="root"))),
        "verification_failed",
    ),
    ("stripped-signature", lambda i: i.corp_token().rsplit(".", 1)[0] + ".", "token_malformed"),
    ("signature-not-base64", lambda i: i.corp_token() + "!!", "token_malformed"),
    ("two-segments", lambda i: i.corp_token().rsplit(".", 1)[0], "token_malformed"),
    ("four-segments", lambda i: i.corp_token() + ".e30", "token_malformed"),
    ("header-not-base64", lambda i: "!!!." + i.corp_token().split(".", 1)[1], "token_malformed"),
    (
        "header-not-json",
        lambda i: b64url(b"not json") + "." + i.corp_token().split(".", 1)[1],
        "token_malformed",
    ),
    (
        "payload-not-json",
        lambda i: _swap_payload(i.corp_token(), b64url(b"[1,2")),
        "token_malformed",
    ),
    ("json-serialization", lambda i: json_serialization(i.corp_token()), "token_malformed"),
    ("crit", lambda i: i.corp.sign(i.claims(), {"crit": ["exp"]}), "crit_header"),
    (
        "crit-unknown",
        lambda i: i.corp.sign(i.claims(), {"crit": ["x-ext"], "x-ext": 1}),
        "crit_header",
    ),
    (
        "huge-below-limit",
        lambda i: i.rogue.sign(i.claims(pad="x" * (HEADER_LIMIT_KB * 1024 - 5000))),
        "verification_failed",
    ),
]


@pytest.mark.parametrize(("token", "reason"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_attack_is_refused(
    gw: JwtGateway, token: Attack, reason: str, request: pytest.FixtureRequest
) -> None:
    path = f"/attack/{request.node.callspec.id}"
    status, headers, body = gw.get(path, token(gw.idp))
    assert _refused(gw, path, status, headers, body) == reason


def test_token_beyond_the_header_limit_is_refused_before_any_filter(gw: JwtGateway) -> None:
    token = gw.idp.corp_token(pad="x" * (HEADER_LIMIT_KB * 1024))
    status, _, body = gw.get("/attack/huge", token)
    assert status == 431
    assert json.loads(body)["error"] == "http1.headers_too_large"
    assert gw.seen("/attack/huge") == []
    # Just below the limit, a valid token is a valid token.
    token = gw.idp.corp_token(pad="x" * (HEADER_LIMIT_KB * 1024 - 5000))
    assert gw.get("/orders/big", token)[0] == 200


def test_shadow_policy_enforces_nothing_and_counts_would_be_refusals(gw: JwtGateway) -> None:
    before = gw.envoy.stats("http.main.rbac.token_check.shadow_denied")
    crit = gw.idp.corp.sign(gw.idp.claims(), {"crit": ["exp"]})
    for name, token in [("none", None), ("bad", "garbage"), ("crit", crit)]:
        status, _, _ = gw.get(f"/shadow/{name}", token)
        assert status == 200, name
    assert gw.get("/shadow/valid", gw.idp.corp_token())[0] == 200
    assert gw.seen("/shadow/valid")[0].headers["x-meshgate-subject"] == "alice"
    assert "x-meshgate-subject" not in gw.seen("/shadow/bad")[0].headers
    after = gw.envoy.stats("http.main.rbac.token_check.shadow_denied")
    key = "http.main.rbac.token_check.shadow_denied"
    assert after[key] - before.get(key, 0) == 1


def test_key_rotation_reaches_envoy_without_touching_the_listener(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The jwt_authn config comes over ECDS: new keys apply in place, no listener drains."""
    for gw in start(tmp_path_factory.mktemp("jwt-rotation")):
        _rotate(gw)


def _rotate(gw: JwtGateway) -> None:
    old_token = gw.idp.corp_token()
    assert gw.get("/orders/before", old_token)[0] == 200
    listeners = gw.envoy.stats("listener_manager.listener_modified")
    reloads = gw.envoy.stats("extension_config_discovery.")
    rotated = Idp(corp=SigningKey.rsa("corp-2"), partner=gw.idp.partner, rogue=gw.idp.rogue)
    gw.rewrite(rotated)
    new_token = rotated.corp_token()
    wait_until(lambda: gw.get("/orders/after", new_token)[0] == 200, 15, "new key in force")
    status, headers, body = gw.get("/orders/old", old_token)
    assert _refused(gw, "/orders/old", status, headers, body) == "unknown_key"
    assert gw.envoy.stats("listener_manager.listener_modified") == listeners
    assert gw.envoy.stats("extension_config_discovery.") != reloads
