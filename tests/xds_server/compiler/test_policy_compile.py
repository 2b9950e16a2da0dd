"""The policy feature's compiled output, checked against the model's meaning.

Generated matchers are run through a reference evaluator of the RBAC subset the compiler
emits (``tests/support/rbac_eval.py``) for tables of requests and callers; the integration
tests (``tests/integration/test_policy.py``) check that Envoy agrees with the same tables.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import re2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from meshgate.config import GatewayConfig, reference_errors
from meshgate.config.access import RoleGraph, parse_pattern
from meshgate.config.identity import Rule
from meshgate.config.regex import check_regex
from meshgate.loader import parse_config
from tests.meshgate.test_access import LOOSE, PATTERNS
from tests.paths import ROOT, TESTS
from tests.support import rbac_eval
from tests.test_docs_examples import examples
from xds_server.compiler import compile_resources, compile_snapshot
from xds_server.compiler.features import policy as policy_feature
from xds_server.compiler.identity_names import (
    ALLOW_RBAC_FILTER,
    DENY_RBAC_FILTER,
    JWT_FILTER,
    POLICY_METADATA,
)
from xds_server.compiler.policy_matchers import (
    claim_value_matcher,
    deny_request_permission,
    methods_permission,
    paths_permission,
)
from xds_server.compiler.policy_rules import PolicyError, PolicyRules, compile_policy
from xds_server.publish.validation import ValidateModeValidator
from xds_server.snapshot.snapshot import LISTENER, ROUTE, Resource

# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "path", "sensitive", "insensitive"), PATTERNS)
def test_path_matchers_mean_the_pattern(
    pattern: str, path: str, sensitive: bool, insensitive: bool
) -> None:
    for ignore_case, expected in ((False, sensitive), (True, insensitive)):
        permission = paths_permission([pattern], ignore_case)
        assert rbac_eval.permission_matches(permission, "GET", path) is expected


PATHS = [
    "/",
    "/a",
    "/A",
    "/a/",
    "/a/b",
    "/a/B",
    "/a/b/",
    "/a/b/c",
    "/a/x/c",
    "/a/x/y/c",
    "/ab",
    "/b/a",
    "/a.b/c",
    "/a/b/c/d",
]
SHAPES = ["/a", "/a/", "/a/b", "/a/**", "/a/b/**", "/**", "/*", "/a/*", "/a/*/c", "/*/b/**"]


@pytest.mark.parametrize("pattern", SHAPES)
def test_every_shape_agrees_with_the_model_on_every_path(pattern: str) -> None:
    parsed = parse_pattern(pattern)
    for ignore_case in (False, True):
        permission = paths_permission([pattern], ignore_case)
        for path in PATHS:
            want = parsed.matches(path, case_sensitive=not ignore_case)
            assert rbac_eval.permission_matches(permission, "GET", path) is want, (
                pattern,
                path,
                ignore_case,
            )


def _regexes(message: Message) -> list[str]:
    """Every ``regex`` string anywhere in ``message``."""
    out = []
    for field, value in message.ListFields():
        if field.name == "regex":
            out.append(value)
        elif field.message_type is not None:
            if isinstance(value, Message):
                items = [value]
            elif hasattr(value, "values"):  # a map field
                items = list(value.values())
            else:
                items = list(value)
            for item in items:
                if isinstance(item, Message):
                    out += _regexes(item)
    return out


def test_regex_only_for_wildcards_and_envoy_accepts_each() -> None:
    assert _regexes(paths_permission(["/a/b", "/a/**", "/**"], True)) == []
    regexes = _regexes(paths_permission(["/a.b/*/c", "/x/*/**"], True))
    assert regexes == [r"(?i)/a\.b/[^/]+/c", "(?i)/x/[^/]+(?:/.*)?"]
    for regex in regexes:
        check_regex(regex)  # RE2 syntax and Envoy's program size


def test_literal_paths_use_exact_and_prefix() -> None:
    permission = paths_permission(["/orders/**"], False)
    matchers = [r.url_path.path for r in permission.or_rules.rules]
    assert [(m.exact, m.prefix) for m in matchers] == [("/orders", ""), ("", "/orders/")]


@pytest.mark.parametrize(
    ("methods", "method", "expected"),
    [
        (["GET"], "GET", True),
        (["GET"], "HEAD", True),  # GET covers HEAD
        (["GET"], "POST", False),
        (["HEAD"], "GET", False),
        (["POST", "PUT"], "PUT", True),
        (["POST", "PUT"], "get", False),
    ],
)
def test_methods(methods: list[str], method: str, expected: bool) -> None:
    assert rbac_eval.permission_matches(methods_permission(methods), method, "/") is expected


# --- callers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (["reader"], True),
        (["x", "orders:read"], True),
        ([], False),
        (["readers"], False),
        (["Reader"], False),
        ("reader", True),
        ("openid orders:read profile", True),
        ("orders:read profile", True),
        ("openid orders:read", True),
        ("orders:readonly", False),
        ("openid orders:reading", False),
        ("xreader", False),
        ("", False),
        (1, False),
        ({"reader": True}, False),
        ([["reader"]], False),
    ],
)
def test_claim_values_list_or_space_separated(claim: Any, expected: bool) -> None:
    matcher = claim_value_matcher(["reader", "orders:read"])
    assert rbac_eval.value_matches(matcher, claim) is expected
    assert _regexes(matcher) == []  # no regex: no RE2 program size limit to reach


# --- whole policies ---------------------------------------------------------------------------

CORP, PARTNER = "https://idp.corp.test", "https://login.partner.test"

BASE: dict[str, Any] = {
    "listeners": [
        {
            "name": "public",
            "port": 8080,
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
                        {
                            "name": "shadow",
                            "match": {"prefix": "/reports/"},
                            "policy": "reports",
                            "service": "orders",
                        },
                        {
                            "name": "any",
                            "match": {"prefix": "/members/"},
                            "policy": "members",
                            "service": "orders",
                        },
                        {"name": "orders", "match": {"prefix": "/"}, "service": "orders"},
                    ],
                }
            ],
        }
    ],
    "services": [{"name": "orders", "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
    "issuers": [
        {
            "name": "corp",
            "issuer": CORP,
            "audiences": "api",
            "jwks": {"url": "https://idp.corp.test/keys"},
            "identity": {"roles": ["roles", "realm_access.roles"]},
        },
        {
            "name": "partner",
            "issuer": PARTNER,
            "audiences": "api",
            "jwks": {"url": "https://login.partner.test/keys"},
            "identity": {"subject": "client_id", "roles": ["scope"]},
        },
    ],
    "roles": [
        {
            "name": "reader",
            "claim_values": ["reader", "orders:read"],
            "permissions": [{"paths": ["/orders/**"], "methods": ["GET"]}],
        },
        {
            "name": "writer",
            "inherits": ["reader"],
            "permissions": [{"paths": ["/orders/*"], "methods": ["POST"]}],
        },
        {"name": "admin", "inherits": ["writer"], "permissions": [{"paths": ["/admin/**"]}]},
        {"name": "analyst", "permissions": [{"paths": ["/reports/**"]}]},
    ],
    "policies": [
        {
            "name": "orders",
            "issuers": ["corp", "partner"],
            "roles": ["reader", "admin"],
            "allow": [
                {"subjects": ["billing"], "paths": ["/orders/*/invoice"], "methods": ["GET"]},
                {"roles": ["writer"], "methods": ["POST"]},
            ],
            "deny": [
                {"roles": ["reader"], "paths": ["/orders/*/refund"]},
                {"subjects": ["mallory"]},
            ],
        },
        {"name": "reports", "mode": "shadow", "issuers": ["corp"], "roles": ["analyst"]},
        {
            "name": "members",
            "issuers": ["corp"],
            "deny": [{"subjects": ["intern"], "paths": ["/members/billing/**"], "shadow": True}],
        },
    ],
}


def _config(**changes: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({**BASE, **changes})


def _rules(config: GatewayConfig, name: str, ignore_case: bool = False) -> PolicyRules:
    policy = config.policy(name)
    assert policy is not None
    return compile_policy(config, RoleGraph.of(config.roles), policy, ignore_case)


def _corp(sub: str, **claims: Any) -> dict[str, Any]:
    return {JWT_FILTER: {"corp": {"iss": CORP, "sub": sub, **claims}}}


def _partner(client: str, scope: str) -> dict[str, Any]:
    return {JWT_FILTER: {"partner": {"iss": PARTNER, "client_id": client, "scope": scope}}}


def _verdict(rules: PolicyRules, method: str, path: str, metadata: dict[str, Any]) -> int:
    """What an enforcing policy answers: the deny filter, then the allow filter."""
    if rules.deny is not None and rules.deny.rbac.HasField("rules"):
        if not rbac_eval.allows(rules.deny.rbac.rules, method, path, metadata):
            return 403
    return 200 if rbac_eval.allows(rules.allow.rbac.rules, method, path, metadata) else 403


CALLERS: dict[str, dict[str, Any]] = {
    "nobody": {},
    "reader": _corp("rita", roles=["reader"]),
    "writer": _corp("wes", roles=["writer"]),
    "admin": _corp("ada", roles=["admin"]),
    "nested": _corp("nia", realm_access={"roles": ["admin"]}),
    "string-role": _corp("sam", roles="admin"),
    "billing": _corp("billing"),
    "billing-partner": _partner("billing", "openid"),
    "scope": _partner("app", "openid orders:read"),
    "partner-sub-reader": _partner("x", "reader"),
    "mallory": _corp("mallory", roles=["admin"]),
    "wrong-iss": {JWT_FILTER: {"corp": {"iss": "https://evil.test", "sub": "e", "roles": []}}},
}

TABLE = [
    ("nobody", "GET", "/orders/1", 403),
    ("reader", "GET", "/orders/1", 200),
    ("reader", "HEAD", "/orders", 200),
    ("reader", "POST", "/orders/1", 403),
    ("writer", "POST", "/orders/1", 200),  # the allow rule: writer's permissions, POST only
    ("writer", "GET", "/orders/1", 200),  # writer holds reader
    ("writer", "DELETE", "/admin/x", 403),
    ("admin", "DELETE", "/admin/x", 200),
    ("admin", "POST", "/orders/1", 200),
    ("nested", "DELETE", "/admin/x", 200),
    ("string-role", "DELETE", "/admin/x", 200),
    ("billing", "GET", "/orders/1/invoice", 200),
    ("billing", "GET", "/orders/1", 403),
    ("billing-partner", "GET", "/orders/1/invoice", 200),  # subject of the partner's claim
    ("scope", "GET", "/orders/1", 200),
    ("scope", "POST", "/orders/1", 403),
    ("partner-sub-reader", "GET", "/orders/2", 200),
    ("reader", "GET", "/orders/1/refund", 403),  # deny wins
    ("admin", "GET", "/orders/1/refund", 403),  # admin inherits reader: the deny applies
    ("mallory", "GET", "/admin/x", 403),
]


def test_policy_decision_table() -> None:
    rules = _rules(_config(), "orders")
    got = [(c, m, p, _verdict(rules, m, p, CALLERS[c])) for c, m, p, _ in TABLE]
    assert got == TABLE


def test_authenticated_only_policy() -> None:
    rules = _rules(_config(), "members")
    assert _verdict(rules, "GET", "/members/x", CALLERS["reader"]) == 200
    assert _verdict(rules, "GET", "/members/x", CALLERS["wrong-iss"]) == 403
    assert _verdict(rules, "GET", "/members/x", CALLERS["nobody"]) == 403
    assert list(rules.allow.rbac.rules.policies) == ["policy:members:authenticated"]


def test_rule_ids_say_where_each_grant_comes_from() -> None:
    rules = _rules(_config(), "orders")
    assert sorted(rules.allow.rbac.rules.policies) == [
        "policy:orders:allow:0",
        "policy:orders:allow:1",
        "policy:orders:role:admin",
        "policy:orders:role:reader",
    ]
    assert rules.deny is not None
    assert sorted(rules.deny.rbac.rules.policies) == [
        "policy:orders:deny:0",
        "policy:orders:deny:1",
    ]
    assert rbac_eval.matched(
        rules.deny.rbac.rules, "GET", "/orders/1/refund", CALLERS["admin"]
    ) == ["policy:orders:deny:0"]


def test_shadow_policy_enforces_nothing() -> None:
    rules = _rules(_config(), "reports")
    assert rules.mode == "shadow"
    assert not rules.allow.rbac.HasField("rules")
    assert rules.allow.rbac.shadow_rules.action == rbac_pb2.RBAC.ALLOW
    assert rules.deny is None  # no deny rules: the deny filter stays off
    shadow = rules.allow.rbac.shadow_rules
    assert rbac_eval.matched(shadow, "GET", "/reports/1", _corp("a", roles=["analyst"])) == [
        "policy:reports:role:analyst"
    ]


def test_shadow_deny_rule_beside_enforced_ones() -> None:
    rules = _rules(_config(), "members")
    assert rules.deny is not None
    deny = rules.deny.rbac
    assert list(deny.rules.policies) == []  # enforcing: the filter runs (see policy_rules.py)
    assert deny.rules.action == rbac_pb2.RBAC.DENY
    assert list(deny.shadow_rules.policies) == ["policy:members:deny:0"]
    assert deny.rules_stat_prefix == deny.shadow_rules_stat_prefix == "policy_deny_"


def test_case_insensitive_rules_for_case_insensitive_routes() -> None:
    config = _config()
    sensitive, insensitive = _rules(config, "orders"), _rules(config, "orders", ignore_case=True)
    admin = CALLERS["admin"]
    assert _verdict(sensitive, "GET", "/ORDERS/1/REFUND", admin) == 403  # not granted either
    assert _verdict(insensitive, "GET", "/ORDERS/1/REFUND", admin) == 403  # denied
    assert _verdict(insensitive, "GET", "/ORDERS/1", admin) == 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuers": ["corp", "nobody"]}, "policy 'orders': unknown issuer 'nobody'"),
        ({"issuers": []}, "policy 'orders' accepts no issuer"),
        ({"roles": ["ghost"]}, "policy 'orders': unknown role 'ghost'"),
        ({"roles": ["loop"]}, "policy 'orders': role inheritance cycle: loop -> loop"),
        (
            {"roles": ["empty"]},
            "policy 'orders': role 'empty' has no permissions, of its own or inherited",
        ),
        (
            {"allow": [{"subjects": ["x"], "shadow": True}]},
            "policy 'orders': allow rule 0 is in shadow",
        ),
        ({"deny": [{"roles": ["ghost"]}]}, "policy 'orders': unknown role 'ghost'"),
    ],
)
def test_policies_that_do_not_compile(change: dict[str, Any], message: str) -> None:
    config = _config(
        roles=[*BASE["roles"], {"name": "loop", "inherits": ["loop"]}, {"name": "empty"}]
    )
    policy = config.policy("orders")
    assert policy is not None
    rules = {k: [Rule.model_validate(r) for r in v] for k, v in change.items() if k in RULES}
    broken = policy.model_construct(**{**policy.__dict__, **change, **rules})
    with pytest.raises(PolicyError) as info:
        compile_policy(config, RoleGraph.of(config.roles), broken, False)
    assert str(info.value) == message


RULES = ("allow", "deny")


# --- the feature in the compiled resources ---------------------------------------------------


def _resources(
    config: GatewayConfig,
) -> tuple[hcm_pb2.HttpConnectionManager, route_pb2.RouteConfiguration]:
    resources = compile_resources(config)
    by_type: dict[str, Resource] = {r.type_url: r for r in resources if r.name == "public"}
    listener = by_type[LISTENER].unpack()
    assert isinstance(listener, listener_pb2.Listener)
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    routes = by_type[ROUTE].unpack()
    assert isinstance(routes, route_pb2.RouteConfiguration)
    return hcm, routes


def _route(routes: route_pb2.RouteConfiguration, name: str) -> rc_pb2.Route:
    return next(r for vh in routes.virtual_hosts for r in vh.routes if r.name == name)


def test_filters_disabled_in_chain_and_switched_on_per_route() -> None:
    hcm, routes = _resources(_config())
    chain = {f.name: f for f in hcm.http_filters}
    assert chain[DENY_RBAC_FILTER].disabled and chain[ALLOW_RBAC_FILTER].disabled
    health = _route(routes, "health")
    assert DENY_RBAC_FILTER not in health.typed_per_filter_config  # public
    assert not health.metadata.filter_metadata
    orders = _route(routes, "orders")
    assert {DENY_RBAC_FILTER, ALLOW_RBAC_FILTER} <= set(orders.typed_per_filter_config)
    assert dict(orders.metadata.filter_metadata[POLICY_METADATA]) == {
        "policy": "orders",
        "mode": "enforce",
    }
    shadow = _route(routes, "shadow")
    assert DENY_RBAC_FILTER not in shadow.typed_per_filter_config
    allow = rbac_filter_pb2.RBACPerRoute()
    shadow.typed_per_filter_config[ALLOW_RBAC_FILTER].Unpack(allow)
    assert not allow.rbac.HasField("rules") and allow.rbac.HasField("shadow_rules")


def test_replies_before_the_catch_all_and_escaped_slashes_unescaped() -> None:
    hcm, _ = _resources(_config())
    mappers = hcm.local_reply_config.mappers
    expressions = [m.filter.extension_filter.typed_config.value for m in mappers[-3:-1]]
    assert policy_feature.FORBIDDEN_EXPRESSION.encode() in expressions[0]
    assert policy_feature.UNAVAILABLE_EXPRESSION.encode() in expressions[1]
    assert mappers[-1].filter.HasField("response_flag_filter")  # the catch-all stays last
    assert (
        hcm.path_with_escaped_slashes_action == hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD
    )


def _mapper_expressions(hcm: hcm_pb2.HttpConnectionManager) -> set[str]:
    out = set()
    for mapper in hcm.local_reply_config.mappers:
        if mapper.filter.HasField("extension_filter"):
            cel = cel_pb2.ExpressionFilter()
            mapper.filter.extension_filter.typed_config.Unpack(cel)
            out.add(cel.expression)
    return out


def test_listener_without_policies_pays_for_nothing() -> None:
    vhost = dict(BASE["listeners"][0]["virtual_hosts"][0])
    del vhost["policy"]
    vhost["routes"] = [{k: v for k, v in r.items() if k != "policy"} for r in vhost["routes"]]
    listener = {**BASE["listeners"][0], "virtual_hosts": [vhost]}
    hcm, routes = _resources(_config(listeners=[listener]))
    assert {DENY_RBAC_FILTER, ALLOW_RBAC_FILTER}.isdisjoint(f.name for f in hcm.http_filters)
    with_policies, _ = _resources(_config())
    ours = {policy_feature.FORBIDDEN_EXPRESSION, policy_feature.UNAVAILABLE_EXPRESSION}
    assert ours <= _mapper_expressions(with_policies)
    assert ours.isdisjoint(_mapper_expressions(hcm))
    assert hcm.path_with_escaped_slashes_action == 0
    assert all(not r.metadata.filter_metadata for vh in routes.virtual_hosts for r in vh.routes)


def _unavailable(route: rc_pb2.Route, policy: str) -> None:
    assert route.WhichOneof("action") == "direct_response"
    assert route.direct_response.status == 503
    assert "policy_unavailable" in route.direct_response.body.inline_string
    assert not route.typed_per_filter_config  # nothing of the route it was
    meta = dict(route.metadata.filter_metadata[POLICY_METADATA])
    assert (meta["policy"], meta["mode"]) == (policy, "unavailable")


def test_missing_or_broken_policy_compiles_to_503_never_open() -> None:
    data = {**BASE, "roles": [*BASE["roles"], {"name": "loop", "inherits": ["loop"]}]}
    routes = data["listeners"][0]["virtual_hosts"][0]["routes"]
    data["listeners"] = [
        {
            **data["listeners"][0],
            "virtual_hosts": [
                {
                    **data["listeners"][0]["virtual_hosts"][0],
                    "routes": [
                        {
                            "name": "ghost",
                            "match": {"prefix": "/ghost/"},
                            "policy": "ghost",
                            "split": {
                                "variants": [
                                    {"name": "a", "service": "orders", "weight": 50},
                                    {"name": "b", "service": "orders", "weight": 50},
                                ],
                                "sticky": {"header": "x-variant"},
                            },
                            "retries": {"num_retries": 2},
                            "cors": {"allow_origins": ["https://app.test"]},
                        },
                        {
                            "name": "loop",
                            "match": {"prefix": "/loop/"},
                            "policy": "loops",
                            "service": "orders",
                        },
                        *routes,
                    ],
                }
            ],
        }
    ]
    data["policies"] = [
        *BASE["policies"],
        {"name": "loops", "issuers": ["corp"], "roles": ["loop"]},
    ]
    config = GatewayConfig.model_validate(data)
    assert len(reference_errors(config)) == 2  # past the file checks on purpose
    _, compiled = _resources(config)
    ghost = [r for vh in compiled.virtual_hosts for r in vh.routes if r.name.startswith("ghost")]
    assert len(ghost) == 3  # the sticky split's routes: every one of them answers 503
    for route in ghost:
        _unavailable(route, "ghost")
    loop = _route(compiled, "loop")
    _unavailable(loop, "loops")
    assert (
        "role inheritance cycle: loop -> loop"
        in loop.metadata.filter_metadata[POLICY_METADATA]["error"]
    )
    # The other routes are compiled as usual.
    assert _route(compiled, "orders").WhichOneof("action") == "route"


def test_one_compile_per_policy_and_case(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []
    real = compile_policy

    def counting(config: GatewayConfig, graph: RoleGraph, policy: Any, ignore_case: bool) -> Any:
        calls.append((policy.name, ignore_case))
        return real(config, graph, policy, ignore_case)

    monkeypatch.setattr(policy_feature, "compile_policy", counting)
    data = dict(BASE)
    vhost = dict(data["listeners"][0]["virtual_hosts"][0])
    vhost["routes"] = [
        {"match": {"prefix": f"/r{i}/", "case_sensitive": i % 2 == 0}, "service": "orders"}
        for i in range(200)
    ]
    data["listeners"] = [{**data["listeners"][0], "virtual_hosts": [vhost]}]
    compile_resources(GatewayConfig.model_validate(data))
    assert sorted(calls) == [("orders", False), ("orders", True)]


def test_role_claim_regexes_fit_envoy() -> None:
    many = [f"role-{i}-with-a-long-name" for i in range(40)]
    matcher = claim_value_matcher(many)
    assert _regexes(matcher) == []
    assert rbac_eval.value_matches(matcher, "openid role-39-with-a-long-name")


# --- the guide (docs/security.md, its policy sections) ------------------------------------------

GUIDE = ROOT / "docs" / "security.md"
SECTIONS = ("## Roles and policies", "## Dry run")


def _guide_sections() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    return "".join(p for p in parts if p.startswith(SECTIONS))


GUIDE_EXAMPLES = examples(_guide_sections())


def test_guide_has_examples_and_real_error_samples() -> None:
    assert len(GUIDE_EXAMPLES) >= 2
    samples = [
        line.replace("gateway.yaml", "{file}", 1)
        for line in _guide_sections().splitlines()
        if line.startswith("gateway.yaml")
    ]
    assert len(samples) >= 6
    real = {
        line
        for path in (TESTS / "fixtures" / "invalid").glob("policy_*.expected")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert [s for s in samples if s not in real] == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("line", "text"), GUIDE_EXAMPLES, ids=[f"example{n}" for n, _ in GUIDE_EXAMPLES]
)
def test_guide_example_is_accepted_by_envoy(line: int, text: str) -> None:
    loaded = parse_config(text, f"{GUIDE.name} example {line}")
    assert any(
        r.policy or vh.policy for vh in loaded.config.listeners[0].virtual_hosts for r in vh.routes
    )
    objections = asyncio.run(ValidateModeValidator().validate(compile_snapshot(loaded.config)))
    assert objections == []


# --- deny rules refuse what an upstream may read as the denied request ------------------------

#: (caller, method, path, status) against the 'orders' policy: the deny rule for
#: '/orders/*/refund' and the grants, with paths and methods spelled as upstreams read them.
LOOSE_TABLE = [
    ("reader", "GET", "/orders/1/refund/", 403),  # a trailing slash (Express, Spring MVC < 6)
    ("reader", "GET", "/orders/1/REFUND", 403),  # any case (Express, IIS)
    ("reader", "GET", "/orders/1/refund;jsessionid=x", 403),  # path parameters (Tomcat)
    ("reader", "GET", "/orders;a/1;b/Refund;c/", 403),
    ("reader", "head", "/orders/1/refund", 403),  # HTTP/2 passes a lower-case method on
    ("reader", "GET", "/orders/1/refunds", 200),  # another resource: still granted
    ("reader", "GET", "/orders/1/refund.json", 200),
    ("reader", "GET", "/orders/1;x", 200),  # parameters only matter to the deny rules
    ("reader", "get", "/orders/1", 403),  # grants stay exact: a lower-case method gets nothing
    ("admin", "delete", "/admin/x", 200),  # unless the grant names no method at all
]


def test_deny_rules_match_loosely_grants_exactly() -> None:
    rules = _rules(_config(), "orders")
    got = [(c, m, p, _verdict(rules, m, p, CALLERS[c])) for c, m, p, _ in LOOSE_TABLE]
    assert got == LOOSE_TABLE


@pytest.mark.parametrize("pattern", [p for p, *_ in PATTERNS])
def test_deny_permission_agrees_with_the_model_on_every_path(pattern: str) -> None:
    permission = deny_request_permission([pattern], [])
    parsed = parse_pattern(pattern)
    paths = {path for _, path, *_ in PATTERNS} | {p for _, p, _ in LOOSE}
    for path in sorted(paths):
        want = parsed.matches_loosely(path)
        assert rbac_eval.permission_matches(permission, "GET", path) is want, (pattern, path)


def test_deny_permission_too_long_for_a_loose_regex_denies_more_never_less() -> None:
    # 14 literal segments around a '*': the loose regex would be over Envoy's RE2 limit.
    pattern = "/api/v1/" + "/".join(f"s{i}" for i in range(12)) + "/*/refund"
    parsed = parse_pattern(pattern)
    permission = deny_request_permission([pattern], [])
    for regex in _regexes(permission):
        check_regex(regex)  # what Envoy gets is within its limit
    inside = "/api/v1/" + "/".join(f"s{i}" for i in range(12)) + "/7/refund"
    for path in (inside, inside + "/", inside.upper(), inside + ";x", "/API;x/other/path"):
        assert rbac_eval.permission_matches(permission, "GET", path), path
    # More: any path with ';' or a trailing slash below the pattern's first segment.
    for path in ("/api/other/", "/api;x", "/APIX;y"):
        assert not parsed.matches_loosely(path)
        assert rbac_eval.permission_matches(permission, "GET", path), path
    for path in ("/api/other", "/other;x/refund", "/other/"):
        assert not rbac_eval.permission_matches(permission, "GET", path), path


def test_route_methods_match_without_case() -> None:
    config = _config(
        listeners=[
            {
                "name": "public",
                "port": 8080,
                "virtual_hosts": [
                    {
                        "name": "shop",
                        "routes": [
                            {
                                "name": "writes",
                                "match": {"prefix": "/", "methods": ["DELETE", "POST"]},
                                "policy": "orders",
                                "service": "orders",
                            },
                            {
                                "name": "delete",
                                "match": {"prefix": "/", "methods": ["DELETE"]},
                                "policy": "orders",
                                "service": "orders",
                            },
                            {"name": "reads", "match": {"prefix": "/"}, "service": "orders"},
                        ],
                    }
                ],
            }
        ]
    )
    _, routes = _resources(config)
    writes, delete = _route(routes, "writes"), _route(routes, "delete")
    [method] = [h for h in writes.match.headers if h.name == ":method"]
    assert re2.fullmatch(method.string_match.safe_regex.regex, "delete")
    [method] = [h for h in delete.match.headers if h.name == ":method"]
    assert rbac_eval.string_matches(method.string_match, "delete")
