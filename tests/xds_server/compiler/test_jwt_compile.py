"""The JWT feature's compile output: providers, requirements, keys, per-route config, replies.

The attack tests run through real Envoy (``tests/integration/test_jwt.py``); these pin the
pieces of config that make them pass, and the rules that keep routes without a policy free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import re2
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.config import GatewayConfig
from meshgate.config.identity import Issuer
from meshgate.config.jwk import key_algorithms, usable_keys
from tests.support import rbac_eval
from tests.support.tokens import SigningKey, jwks_of
from xds_server.compiler import IssuerKeys, compile_resources
from xds_server.compiler.features.jwt.checks import (
    CLAIMS,
    DUPLICATE,
    TOKEN_CHECKS,
    token_rules,
    twice_in_cookies,
)
from xds_server.compiler.features.jwt.headers import claim_value, identity_headers, issuer_value
from xds_server.compiler.features.jwt.keys import NO_KEY, derive_no_key, served_keys
from xds_server.compiler.features.jwt.replies import JWT_FAILURES, jwt_details
from xds_server.compiler.identity_names import (
    ALLOW_RBAC_FILTER,
    CLIENT_HEADERS_FILTER,
    DENY_RBAC_FILTER,
    JWT_FILTER,
    TOKEN_RBAC_FILTER,
)

RSA = SigningKey.rsa("r1")
EC = SigningKey.ec("e1")
URL = "https://idp.example.com/jwks.json"


def _issuer(name: str = "corp", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "issuer": f"https://{name}.example.com",
        "audiences": "api",
        "jwks": {"inline": jwks_of(RSA)},
        **extra,
    }


def _config(routes: list[dict[str, Any]], **vhost: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "listeners": [
                {
                    "name": "main",
                    "port": 8080,
                    "virtual_hosts": [{"name": "app", "routes": routes, **vhost}],
                },
                {
                    "name": "other",
                    "port": 8081,
                    "virtual_hosts": [
                        {"name": "o", "routes": [{"match": {"prefix": "/"}, "service": "api"}]}
                    ],
                },
            ],
            "services": [{"name": "api", "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
            "issuers": [
                _issuer(identity={"tenant": "org.id", "roles": ["roles", "cognito:groups"]}),
                _issuer("partner", algorithms=["ES256"], jwks={"url": URL}),
            ],
            "policies": [
                {"name": "orders", "issuers": ["corp", "partner"]},
                {"name": "audit", "mode": "shadow", "issuers": ["corp"]},
            ],
        }
    )


@dataclass
class Compiled:
    hcms: dict[str, hcm_pb2.HttpConnectionManager] = field(default_factory=dict)
    routes: dict[str, route_pb2.RouteConfiguration] = field(default_factory=dict)
    #: The one jwt_authn config every listener asks for over ECDS.
    jwt: jwt_pb2.JwtAuthentication | None = None


def _compiled(config: GatewayConfig, **kw: Any) -> Compiled:
    out = Compiled()
    for res in compile_resources(config, **kw):
        message = res.unpack()
        if isinstance(message, extension_pb2.TypedExtensionConfig):
            assert res.name == message.name == JWT_FILTER
            out.jwt = jwt_pb2.JwtAuthentication()
            message.typed_config.Unpack(out.jwt)
        elif isinstance(message, listener_pb2.Listener):
            hcm = hcm_pb2.HttpConnectionManager()
            message.filter_chains[0].filters[0].typed_config.Unpack(hcm)
            out.hcms[res.name] = hcm
        elif isinstance(message, route_pb2.RouteConfiguration):
            out.routes[res.name] = message
    return out


JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"


def _jwt(config: GatewayConfig, **kw: Any) -> jwt_pb2.JwtAuthentication:
    """The jwt_authn config; each listener's chain entry asks for it over ECDS, disabled."""
    compiled = _compiled(config, **kw)
    for hcm in compiled.hcms.values():
        for flt in hcm.http_filters:
            if flt.name == JWT_FILTER:
                assert flt.disabled and not flt.HasField("typed_config")
                assert list(flt.config_discovery.type_urls) == [JWT_TYPE]
    assert compiled.jwt is not None
    return compiled.jwt


ROUTES = [
    {"name": "health", "match": {"path": "/healthz"}, "service": "api", "public": True},
    {"name": "audit", "match": {"prefix": "/audit/"}, "service": "api", "policy": "audit"},
    {"name": "rest", "match": {"prefix": "/"}, "service": "api"},
]


def test_policy_routes_switch_the_filters_on_and_other_routes_pay_nothing() -> None:
    compiled = _compiled(_config(ROUTES, policy="orders"))
    hcms, routes = compiled.hcms, compiled.routes
    chain = [f for f in hcms["main"].http_filters if f.name != CLIENT_HEADERS_FILTER]
    assert [f.name for f in chain] == [
        JWT_FILTER,
        TOKEN_RBAC_FILTER,
        DENY_RBAC_FILTER,
        ALLOW_RBAC_FILTER,
        "envoy.filters.http.router",
    ]
    assert all(f.disabled for f in chain[:4])
    health, audit, rest = routes["main"].virtual_hosts[0].routes
    assert not health.typed_per_filter_config and not health.request_headers_to_add
    per_route = jwt_pb2.PerRouteConfig()
    rest.typed_per_filter_config[JWT_FILTER].Unpack(per_route)
    assert per_route.requirement_name == "orders"
    audit.typed_per_filter_config[JWT_FILTER].Unpack(per_route)
    assert per_route.requirement_name == "audit"
    # Shadow policy: the token checks only as shadow rules.
    shadow = http_rbac_pb2.RBACPerRoute()
    assert audit.typed_per_filter_config[TOKEN_RBAC_FILTER].Unpack(shadow)
    assert shadow.rbac.shadow_rules.policies and not shadow.rbac.HasField("rules")
    # The listener without policies has no identity filter and no 401 mappers.
    other = [f.name for f in hcms["other"].http_filters]
    assert JWT_FILTER not in other and TOKEN_RBAC_FILTER not in other
    assert len(hcms["other"].local_reply_config.mappers) < len(
        hcms["main"].local_reply_config.mappers
    )


def test_providers_and_requirements() -> None:
    jwt = _jwt(_config(ROUTES, policy="orders"))
    assert sorted(jwt.providers) == ["corp", "partner"]
    corp = jwt.providers["corp"]
    assert corp.require_expiration and not corp.forward
    assert corp.clock_skew_seconds == 30
    assert (corp.payload_in_metadata, corp.header_in_metadata) == ("corp", "corp.header")
    assert [(h.name, h.value_prefix) for h in corp.from_headers] == [("authorization", "Bearer ")]
    assert not corp.from_params and not corp.from_cookies
    assert list(corp.normalize_payload_in_metadata.space_delimited_claims) == [
        "roles",
        "cognito:groups",
    ]
    assert jwt.strip_failure_response and not jwt.rules
    orders = jwt.requirement_map["orders"]
    assert [r.provider_name for r in orders.requires_any.requirements] == ["corp", "partner"]
    audit = jwt.requirement_map["audit"].requires_any.requirements
    assert audit[0].provider_name == "corp" and audit[1].HasField("allow_missing_or_failed")


def test_single_issuer_requirement_names_the_provider() -> None:
    config = _config([{"match": {"prefix": "/"}, "service": "api", "policy": "solo"}])
    config = config.model_copy(
        update={
            "policies": [
                *config.policies,
                config.policies[0].model_copy(update={"name": "solo", "issuers": ["corp"]}),
            ]
        }
    )
    jwt = _jwt(config)
    assert jwt.requirement_map["solo"].provider_name == "corp"
    assert list(jwt.providers) == ["corp"]  # partner is not used here


def test_url_keys_are_used_only_when_fetched_for_the_configured_url() -> None:
    config = _config(ROUTES, policy="orders")
    partner = config.issuer("partner")
    assert partner is not None
    fetched = {"partner": IssuerKeys(f"url:{URL}", json.dumps(jwks_of(EC, RSA)))}
    # The RSA key cannot serve ES256: dropped.
    assert [k["kid"] for k in served_keys(partner, fetched)] == ["e1"]
    stale = {"partner": IssuerKeys("url:https://old.example.com/jwks", json.dumps(jwks_of(EC)))}
    assert served_keys(partner, stale) == [NO_KEY]
    assert served_keys(partner, {}) == [NO_KEY]
    assert served_keys(partner, {"partner": IssuerKeys(f"url:{URL}", "not json")}) == [NO_KEY]
    served = json.loads(_jwt(config, jwks=fetched).providers["partner"].local_jwks.inline_string)
    assert served == {"keys": [EC.public_jwk()]}


def test_no_key_is_a_point_derived_from_its_seed() -> None:
    assert derive_no_key() == (NO_KEY["x"], NO_KEY["y"])
    x, y = (int.from_bytes(_unb64(v), "big") for v in derive_no_key())
    ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()  # on the curve


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_keys_are_kept_only_for_allowed_algorithms_and_only_public_members() -> None:
    rsa = {**RSA.public_jwk(with_alg=False), "x5c": ["MIIB"], "key_ops": ["verify"]}
    assert key_algorithms(rsa) >= {"RS256", "PS256"}
    assert key_algorithms({**rsa, "alg": "PS256"}) == {"PS256"}
    assert key_algorithms({**rsa, "use": "enc"}) == set()
    assert key_algorithms({**rsa, "key_ops": ["encrypt"]}) == set()
    assert key_algorithms({**rsa, "d": "private"}) == set()
    assert key_algorithms({"kty": "oct", "k": "c2VjcmV0"}) == set()
    assert key_algorithms({"kty": "EC", "crv": "P-384", "x": "a", "y": "b"}) == {"ES384"}
    assert key_algorithms({"kty": "RSA", "n": "abc"}) == set()  # no 'e'
    [kept] = usable_keys([rsa, EC.public_jwk()], ["RS256"])
    assert set(kept) == {"kty", "n", "e", "kid", "use"}


def test_identity_headers_come_from_the_verified_payload() -> None:
    corp = Issuer.model_validate(
        _issuer(
            identity={"tenant": "org.id", "roles": ["roles", "cognito:groups"]},
            claim_headers={"X-Email": "email"},
        )
    )
    assert claim_value(corp, "org.id") == f"%DYNAMIC_METADATA({JWT_FILTER}:corp:org:id)%"
    headers = [(h.header.key, h.header.value, h.append_action) for h in identity_headers([corp])]
    keys = [k for k, _, _ in headers]
    # The ':' role claim is not sent (the formatter cannot address it).
    assert keys == [
        "x-meshgate-subject",
        "x-meshgate-tenant",
        "x-meshgate-roles",
        "x-email",
        "x-meshgate-issuer",
    ]
    assert "%CEL(" in issuer_value([corp]) and ")%" not in issuer_value([corp])[:-2]
    assert headers[-1][1] == issuer_value([corp])  # shadow: the token may be absent or bad
    enforced = identity_headers([corp], enforced=True)
    assert enforced[-1].header.value == "corp"  # one issuer, enforced: no per-request CEL
    partner = Issuer.model_validate(_issuer("partner"))
    both = identity_headers([corp, partner], enforced=True)
    assert both[-1].header.value == issuer_value([corp, partner])


def test_token_checks_cover_every_listener_issuer() -> None:
    corp = Issuer.model_validate(_issuer(algorithms=["RS256", "PS256"]))
    partner = Issuer.model_validate(
        _issuer(
            "partner",
            algorithms=["ES256"],
            jwks={"url": URL},
            tokens=[{"cookie": "session"}],
            forward_token=True,
        )
    )
    rules = token_rules([corp, partner])
    assert set(rules.policies) == {c.name for c in TOKEN_CHECKS}
    # Without a cookie source, no duplicate check to pay for.
    assert DUPLICATE.name not in token_rules([corp]).policies
    assert all(":" in name for name in rules.policies)  # never a config name
    text = str(rules.policies["token:alg"])
    for expected in ("corp.header", "partner.header", "RS256", "PS256", "ES256"):
        assert expected in text
    assert rules.policies["token:iat"].HasField("condition")


def test_401_mappers_sit_before_the_catch_all() -> None:
    mappers = _compiled(_config(ROUTES, policy="orders")).hcms["main"].local_reply_config.mappers
    catch_all = mappers[-1]
    assert (
        catch_all.filter.HasField("response_flag_filter")
        and not catch_all.filter.response_flag_filter.flags
    )
    reasons = [m for m in mappers if m.status_code.value == 401]
    assert len(reasons) == len(TOKEN_CHECKS) + len(JWT_FAILURES)
    assert jwt_details("Jwt is missing") == "jwt_authn_access_denied{Jwt_is_missing"


def test_a_key_change_updates_the_filter_config_not_the_listener() -> None:
    """Over ECDS, a JWKS refresh changes one resource; listeners (and their connections) stay."""
    config = _config(ROUTES, policy="orders")
    before = compile_resources(
        config, jwks={"partner": IssuerKeys(f"url:{URL}", json.dumps(jwks_of(EC)))}
    )
    rotated = SigningKey.ec("e2")
    after = compile_resources(
        config, jwks={"partner": IssuerKeys(f"url:{URL}", json.dumps(jwks_of(rotated)))}
    )
    changed = {r.name for r in after} - {r.name for r in before} | {
        a.name for a, b in zip(after, before, strict=True) if a.version != b.version
    }
    assert changed == {JWT_FILTER}


# --- claims a header cannot carry, and a token cookie sent twice -----------------------------


@pytest.mark.parametrize(
    ("claims", "refused"),
    [
        ({"sub": "alice", "email": "a@x", "org": {"id": "acme"}}, False),
        ({"sub": "ålice ☃", "org": {"id": 5}}, True),  # a tenant that is not a string
        ({"sub": "alice", "org": {"id": ["a", "b"]}}, True),
        ({"sub": "alice", "org": ["acme"]}, False),  # no tenant at all: no header
        ({"sub": " alice"}, True),  # Envoy would send 'alice'
        ({"sub": "alice\t"}, True),
        ({"sub": "al ice"}, False),
        ({"sub": "alice\r\nx-evil: 1"}, True),
        ({"sub": "alice\x00"}, True),
        ({"sub": "alice\x7f"}, True),
        ({"sub": "alice", "email": "a@x "}, True),  # a claim_headers claim
        ({"sub": "alice", "email": ["a@x "]}, False),  # a list is sent as JSON
        ({"sub": "alice", "email": 7}, False),
        ({"sub": "alice", "roles": [" admin"]}, False),  # roles are sent as JSON lists
        ({}, False),  # no subject: no header
    ],
)
def test_claims_a_header_cannot_carry_are_refused(claims: dict[str, Any], refused: bool) -> None:
    corp = Issuer.model_validate(
        _issuer(identity={"tenant": "org.id"}, claim_headers={"x-user-email": "email"})
    )
    policy = token_rules([corp]).policies[CLAIMS.name]
    metadata = {JWT_FILTER: {"corp": {"iss": corp.issuer, **claims}}}
    assert any(rbac_eval.principal_matches(p, metadata) for p in policy.principals) is refused


@pytest.mark.parametrize(
    ("cookie", "twice"),
    [
        ("session=a", False),
        ("theme=dark; session=a", False),
        ("session=a; session=b", True),
        ("x=1; session=a; y=2;session=b", True),
        ("session=a,session=b", True),  # two Cookie lines, as CEL joins them
        ("a=1; session=a,b=2; session =b", True),
        ("xsession=a; session=b", False),
        ("session=a; session_id=b; mysession=c", False),
        ("session=a; x=session=b", False),
    ],
)
def test_a_token_cookie_sent_twice(cookie: str, twice: bool) -> None:
    assert (re2.search(twice_in_cookies("session"), cookie) is not None) is twice
