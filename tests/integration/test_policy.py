"""Roles, permissions, deny rules and dry runs through real Envoy, with real signed tokens.

One Envoy serves the whole module: a config with two issuers, inheriting roles and four
policies is compiled (with the registered JWT feature, or ``MinimalJwt`` until there is one),
inlined into a static bootstrap and sent requests from a table of (caller, method, path) ->
status. Every refused request is checked not to have reached the upstream.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from meshgate.config import GatewayConfig, Route, reference_errors
from meshgate.proxy.envoy_process import free_port
from tests.support.minimal_jwt import features_with_jwt
from tests.support.tokens import SigningKey, in_, jwks_of
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.features import FEATURES
from xds_server.compiler.features.policy import FORBIDDEN_MESSAGE
from xds_server.compiler.filters import http_filter
from xds_server.compiler.identity_names import IP_RBAC_FILTER
from xds_server.compiler.protos import pack

from .harness import Client, Upstreams
from .static_gateway import StaticGateway

pytestmark = pytest.mark.integration

CORP = "https://idp.corp.test"
PARTNER = "https://login.partner.test"
API = "orders-api"


class _MinimalIpRules(Feature):
    """Another RBAC filter that answers 403 with no rule named (an allow list, like IP rules):
    its denials must keep their own reply, not the policy's. Used until an IP rules feature is
    registered; then the same config (``ip_rules``) goes through that one."""

    name = "test-minimal-ip-rules"
    http_filter_names = (IP_RBAC_FILTER,)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        return [http_filter(IP_RBAC_FILTER, rbac_filter_pb2.RBAC(), disabled=True)]

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        if route.ip_rules is None:
            return
        ranges = [
            address_pb2.CidrRange(
                address_prefix=str(net.network_address),
                prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen),
            )
            for net in map(ipaddress.ip_network, route.ip_rules.allow)
        ]
        allow = rbac_pb2.RBAC(
            action=rbac_pb2.RBAC.ALLOW,
            policies={
                "ip-allow": rbac_pb2.Policy(
                    permissions=[rbac_pb2.Permission(any=True)],
                    principals=[rbac_pb2.Principal(remote_ip=r) for r in ranges],
                )
            },
        )
        out.typed_per_filter_config[IP_RBAC_FILTER].CopyFrom(
            pack(rbac_filter_pb2.RBACPerRoute(rbac=rbac_filter_pb2.RBAC(rules=allow)))
        )


def _features() -> tuple[Feature, ...]:
    features = tuple(features_with_jwt())
    if any(IP_RBAC_FILTER in f.http_filter_names for f in FEATURES):
        return features
    return (*features, _MinimalIpRules())


def _config(port: int, upstream: int, corp: SigningKey, partner: SigningKey) -> dict[str, Any]:
    def route(name: str, prefix: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "match": {"prefix": prefix}, "service": "orders", **extra}

    return {
        "listeners": [
            {
                "name": "public",
                "address": "127.0.0.1",
                "port": port,
                "virtual_hosts": [
                    {
                        "name": "shop",
                        "policy": "orders",
                        "routes": [
                            {
                                "name": "health",
                                "match": {"path": "/healthz"},
                                "public": True,
                                "service": "orders",
                            },
                            route("reports", "/reports/", policy="reports"),
                            route("members", "/members/", policy="members"),
                            route("broken", "/broken/", policy="ghost"),
                            route("cyclic", "/cyclic/", policy="cyclic"),
                            route("other", "/other/", ip_rules={"allow": ["10.0.0.0/8"]}),
                            {
                                "name": "legacy",
                                "match": {"prefix": "/Legacy/", "case_sensitive": False},
                                "service": "orders",
                            },
                            route("orders", "/"),
                        ],
                    }
                ],
            }
        ],
        "services": [{"name": "orders", "endpoints": [{"address": "127.0.0.1", "port": upstream}]}],
        "issuers": [
            {
                "name": "corp",
                "issuer": CORP,
                "audiences": API,
                "jwks": {"inline": jwks_of(corp)},
                "identity": {"roles": ["roles", "realm_access.roles"]},
            },
            {
                "name": "partner",
                "issuer": PARTNER,
                "audiences": [API],
                "jwks": {"inline": jwks_of(partner)},
                "identity": {"subject": "client_id", "roles": ["scope"]},
            },
        ],
        "roles": [
            {
                "name": "reader",
                "claim_values": ["reader", "orders:read"],
                "permissions": [
                    {"paths": ["/orders/**"], "methods": ["GET"]},
                    {"paths": ["/legacy/**", "/other/**"], "methods": ["GET"]},
                ],
            },
            {
                "name": "writer",
                "inherits": ["reader"],
                "permissions": [{"paths": ["/orders/*"], "methods": ["POST", "PUT"]}],
            },
            {"name": "admin", "inherits": ["writer"], "permissions": [{"paths": ["/admin/**"]}]},
            {"name": "analyst", "permissions": [{"paths": ["/reports/**"], "methods": ["GET"]}]},
            # A cycle, possible only in a config built past the file checks (see 'cyclic').
            {"name": "loop-a", "inherits": ["loop-b"], "permissions": [{"paths": ["/cyclic/**"]}]},
            {"name": "loop-b", "inherits": ["loop-a"]},
        ],
        "policies": [
            {
                "name": "orders",
                "issuers": ["corp", "partner"],
                "roles": ["reader", "admin"],
                "allow": [
                    {"subjects": ["billing"], "paths": ["/orders/*/invoice"], "methods": ["GET"]},
                    # writer is not among the granted roles: its permissions for POST only
                    {"roles": ["writer"], "methods": ["POST"]},
                ],
                "deny": [
                    {"roles": ["reader"], "paths": ["/orders/*/refund"]},
                    {"subjects": ["mallory"]},
                    {"authenticated": True, "paths": ["/legacy/internal/**"]},
                ],
            },
            {
                "name": "reports",
                "mode": "shadow",
                "issuers": ["corp"],
                "roles": ["analyst"],
                "deny": [{"authenticated": True, "paths": ["/reports/salaries/**"]}],
            },
            {
                "name": "members",
                "issuers": ["corp"],
                "deny": [
                    {"subjects": ["intern"], "paths": ["/members/billing/**"], "shadow": True}
                ],
            },
            {"name": "cyclic", "issuers": ["corp"], "roles": ["loop-a"]},
        ],
    }


@dataclass
class Gateway:
    envoy: StaticGateway
    client: Client
    corp: SigningKey
    partner: SigningKey

    def token(self, sub: str, issuer: str = "corp", **claims: Any) -> str:
        key, iss = (self.corp, CORP) if issuer == "corp" else (self.partner, PARTNER)
        subject = "client_id" if issuer == "partner" else "sub"
        return key.sign({"iss": iss, "aud": API, subject: sub, "exp": in_(600), **claims})

    def request(
        self, method: str, path: str, token: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self.client.request(path, method=method, headers=headers)

    def log_of(self, request_id: str) -> dict[str, Any]:
        for _ in range(100):
            for line in self.envoy.access_log():
                if line.get("request_id") == request_id:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no access log line for {request_id}")


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    upstreams = Upstreams(["orders"])
    corp, partner = SigningKey.rsa("corp-1"), SigningKey.rsa("partner-1")
    port = free_port()
    config = GatewayConfig.model_validate(_config(port, upstreams.ports["orders"], corp, partner))
    # Past the file checks on purpose: 'ghost' and the loop-a/loop-b cycle would reject the
    # file; a config assembled from other sources may still carry them.
    assert sorted(message for _, message in reference_errors(config)) == [
        "role inheritance cycle: loop-a -> loop-b -> loop-a (a role cannot inherit itself, "
        "directly or through other roles)",
        "unknown policy 'ghost' (defined policies: cyclic, members, orders, reports)",
    ]
    envoy = StaticGateway(config, _features())
    client = Client(port)
    try:
        yield Gateway(envoy, client, corp, partner)
    finally:
        client.close()
        envoy.stop()
        upstreams.stop()


# (caller, method, path, status): callers are defined in _callers below.
TABLE = [
    ("reader", "GET", "/orders/42", 200),
    ("reader", "HEAD", "/orders/42", 200),  # GET covers HEAD
    ("reader", "GET", "/orders", 200),  # '/orders/**' includes the bare prefix
    ("reader", "GET", "/orders/42/items?x=1", 200),  # the query string is not the path
    ("reader", "GET", "/ordersx", 403),
    ("reader", "POST", "/orders/42", 403),
    ("reader", "GET", "/admin/users", 403),
    ("writer", "POST", "/orders/42", 200),  # the allow rule: writer's permissions, POST only
    ("writer", "PUT", "/orders/42", 403),
    ("writer", "POST", "/orders/42/items", 403),  # '*' is one segment
    ("writer", "GET", "/orders/42/items", 200),  # inherited from reader
    ("writer", "GET", "/admin", 403),
    ("admin", "DELETE", "/admin/users/7", 200),
    ("admin", "GET", "/admin", 200),
    ("admin", "PUT", "/orders/1", 200),  # admin -> writer
    ("admin", "GET", "/orders/1", 200),  # admin -> writer -> reader
    ("nested-admin", "DELETE", "/admin/x", 200),  # realm_access.roles
    ("no-roles", "GET", "/orders/1", 403),
    ("unknown-role", "GET", "/orders/1", 403),
    ("billing", "GET", "/orders/9/invoice", 200),  # allow rule by subject
    ("billing", "GET", "/orders/9", 403),
    ("scope", "GET", "/orders/1", 200),  # 'orders:read' in a space-separated scope
    ("scope", "POST", "/orders/1", 403),
    ("scope-prefix", "GET", "/orders/1", 403),  # 'orders:readonly' is not 'orders:read'
    ("scope-as-string-role", "GET", "/orders/1", 200),  # a role claim that is one string
    # deny wins
    ("reader", "GET", "/orders/7/refund", 403),
    ("admin", "GET", "/orders/7/refund", 403),  # admin inherits reader: the deny applies
    ("mallory", "GET", "/orders/1", 403),  # an admin, denied everything by subject
    ("reader", "GET", "/orders/7%2Frefund", 403),  # an escaped slash cannot dodge the deny
    # a case-insensitive route gets case-insensitive rules
    ("reader", "GET", "/LEGACY/Public/x", 200),
    ("reader", "GET", "/Legacy/INTERNAL/x", 403),
    # public route, authenticated-only policy
    ("anonymous", "GET", "/healthz", 200),
    ("no-roles", "GET", "/members/list", 200),
    ("anonymous", "GET", "/members/list", 401),
    ("anonymous", "GET", "/orders/1", 401),
    ("expired", "GET", "/orders/1", 401),
]


def _callers(gw: Gateway) -> dict[str, str | None]:
    return {
        "anonymous": None,
        "reader": gw.token("rita", roles=["reader"]),
        "writer": gw.token("wes", roles=["writer"]),
        "admin": gw.token("ada", roles=["admin"]),
        "nested-admin": gw.token("nia", realm_access={"roles": ["admin"]}),
        "no-roles": gw.token("nora"),
        "unknown-role": gw.token("uma", roles=["superuser"]),
        "billing": gw.token("billing"),
        "scope": gw.token("app-1", issuer="partner", scope="openid orders:read profile"),
        "scope-prefix": gw.token("app-2", issuer="partner", scope="orders:readonly"),
        "scope-as-string-role": gw.token("sam", roles="writer"),
        "mallory": gw.token("mallory", roles=["admin"]),
        "expired": gw.token("eve", roles=["admin"], exp=in_(-3600)),
    }


def test_roles_permissions_and_deny_table(gw: Gateway) -> None:
    callers = _callers(gw)
    got = []
    for caller, method, path, _ in TABLE:
        status, _, body = gw.request(method, path, callers[caller])
        got.append((caller, method, path, status))
        if status != 200:
            assert b'"upstream"' not in body, (caller, method, path, body)
    assert got == TABLE


def test_denial_is_json_403_with_request_id(gw: Gateway) -> None:
    reader = _callers(gw)["reader"]
    for method, path in (("POST", "/orders/1"), ("GET", "/orders/7/refund")):
        status, headers, body = gw.request(method, path, reader)
        assert status == 403
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {
            "error": "forbidden",
            "message": FORBIDDEN_MESSAGE,
            "request_id": headers["x-request-id"],
        }
        line = gw.log_of(headers["x-request-id"])
        assert (line["policy"], line["policy_mode"]) == ("orders", "enforce")
    # The deny rule that refused the request is in the log, never in the reply.
    assert gw.log_of(headers["x-request-id"])["details"] == (
        "rbac_access_denied_matched_policy[policy:orders:deny:0]"
    )


def test_other_rbac_denials_keep_their_own_reply(gw: Gateway) -> None:
    # The caller may GET /other/ by its role, but the route's allow list has no 127.0.0.1.
    status, _, body = gw.request("GET", "/other/x", _callers(gw)["reader"])
    assert status == 403
    assert FORBIDDEN_MESSAGE.encode() not in body
    assert b'"upstream"' not in body


def test_unavailable_policy_is_503_never_open(gw: Gateway) -> None:
    for path in ("/broken/x", "/cyclic/x"):
        for token in (None, _callers(gw)["admin"]):
            status, headers, body = gw.request("GET", path, token)
            assert status == 503, path
            reply = json.loads(body)
            assert reply["error"] == "policy_unavailable"
            assert reply["request_id"] == headers["x-request-id"]
            assert "upstream" not in reply
    line = gw.log_of(headers["x-request-id"])
    assert (line["policy"], line["policy_mode"]) == ("cyclic", "unavailable")


def test_shadow_policy_allows_and_logs_whom_it_would_deny(gw: Gateway) -> None:
    analyst = gw.token("ann", roles=["analyst"])
    cases = [
        # (token, path, shadow_allow, shadow_grant, shadow_deny, shadow_deny_rule)
        (None, "/reports/q1", "denied", None, "allowed", None),
        (gw.token("bob", roles=["reader"]), "/reports/q1", "denied", None, "allowed", None),
        (analyst, "/reports/q1", "allowed", "policy:reports:role:analyst", "allowed", None),
        (
            analyst,
            "/reports/salaries/2024",
            "allowed",
            "policy:reports:role:analyst",
            "denied",
            "policy:reports:deny:0",
        ),
    ]
    counter = "http.public.rbac.policy_allow_.shadow_denied"
    before = gw.envoy.stats(counter).get(counter, 0)
    for token, path, allow, grant, deny, rule in cases:
        status, headers, body = gw.request("GET", path, token)
        assert status == 200 and json.loads(body)["upstream"] == "orders", path
        line = gw.log_of(headers["x-request-id"])
        assert (line["policy"], line["policy_mode"]) == ("reports", "shadow")
        got = (
            line["shadow_allow"],
            line["shadow_grant"],
            line["shadow_deny"],
            line["shadow_deny_rule"],
        )
        assert got == (allow, grant, deny, rule), (path, token is None)
    # Envoy counts what the shadow grants would have refused, per listener.
    assert gw.envoy.stats(counter)[counter] - before == 2


def test_shadow_deny_rule_in_enforcing_policy(gw: Gateway) -> None:
    intern = gw.token("intern")
    status, headers, _ = gw.request("GET", "/members/billing/march", intern)
    assert status == 200
    line = gw.log_of(headers["x-request-id"])
    assert (line["shadow_deny"], line["shadow_deny_rule"]) == ("denied", "policy:members:deny:0")
    assert line["shadow_allow"] is None  # the policy itself enforces
    status, headers, _ = gw.request("GET", "/members/list", intern)
    assert status == 200
    assert gw.log_of(headers["x-request-id"])["shadow_deny"] == "allowed"


def test_unique_request_ids_are_logged(gw: Gateway) -> None:
    # A route without a policy: no policy fields, and nothing of the policy's on the path.
    status, headers, _ = gw.request("GET", "/healthz")
    assert status == 200
    line = gw.log_of(headers["x-request-id"])
    assert line["policy"] is None and line["shadow_allow"] is None
    assert uuid.UUID(headers["x-request-id"])
