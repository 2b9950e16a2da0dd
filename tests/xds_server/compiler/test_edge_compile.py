"""The edge features compiled, without Envoy: client address, the x-meshgate-* strip, IP rules.

The goldens pin whole outputs; these tests pin the rules behind them: which HCM fields a
``client_address`` becomes, that the strip is first on every listener, where IP rules go (the
filter only where rules exist, disabled when only routes or virtual hosts have them, per-route
configs only where rules apply) and, by evaluating the compiled RBAC policy the way Envoy does,
that the levels combine as documented: deny wins, each level's allow list narrows.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
import yaml
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.original_ip_detection.xff.v3 import xff_pb2

from meshgate.loader import ConfigError, parse_config
from tests.paths import ROOT, TESTS
from tests.support.compile_inputs import placeholder_secrets
from tests.test_docs_examples import examples
from xds_server.compiler import compile_snapshot
from xds_server.compiler.features.ip_rules import IP_DENIED_DETAILS, IP_DENY_POLICY
from xds_server.compiler.identity_names import CLIENT_HEADERS_FILTER, IP_RBAC_FILTER
from xds_server.publish.validation import ValidateModeValidator
from xds_server.snapshot.snapshot import LISTENER, ROUTE

ROUTER = "envoy.filters.http.router"
GUIDE = ROOT / "docs" / "security.md"
EXAMPLES = examples(GUIDE.read_text(encoding="utf-8"))


def _config(
    listener: dict[str, Any] | None = None,
    vhost: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
) -> str:
    return yaml.safe_dump(
        {
            "listeners": [
                {
                    "name": "public",
                    "port": 8080,
                    "virtual_hosts": [
                        {
                            "name": "admin",
                            "domains": ["admin.example.com"],
                            "routes": [
                                {
                                    "name": "r",
                                    "match": {"prefix": "/r/"},
                                    "service": "a",
                                    **(route or {}),
                                },
                                {"name": "rest", "match": {"prefix": "/"}, "service": "a"},
                            ],
                            **(vhost or {}),
                        },
                        {
                            "name": "www",
                            "routes": [{"name": "www", "match": {"prefix": "/"}, "service": "a"}],
                        },
                    ],
                    **(listener or {}),
                }
            ],
            "services": [{"name": "a", "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
        }
    )


def _compiled(text: str) -> tuple[hcm_pb2.HttpConnectionManager, route_pb2.RouteConfiguration]:
    snapshot = compile_snapshot(parse_config(text).config)
    listener = snapshot.of_type(LISTENER)["public"].unpack()
    routes = snapshot.of_type(ROUTE)["public"].unpack()
    assert isinstance(listener, listener_pb2.Listener)
    assert isinstance(routes, route_pb2.RouteConfiguration)
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    return hcm, routes


def _filters(hcm: hcm_pb2.HttpConnectionManager) -> list[tuple[str, bool]]:
    return [(f.name, f.disabled) for f in hcm.http_filters]


# --- who the client is ------------------------------------------------------------------------


def test_by_default_the_client_is_the_peer() -> None:
    hcm, _ = _compiled(_config())
    assert hcm.use_remote_address.value is True
    assert hcm.xff_num_trusted_hops == 0
    assert not hcm.original_ip_detection_extensions


def test_trusted_hops_keep_use_remote_address() -> None:
    hcm, _ = _compiled(_config({"client_address": {"trusted_hops": 2}}))
    assert hcm.use_remote_address.value is True
    assert hcm.xff_num_trusted_hops == 2
    assert not hcm.original_ip_detection_extensions


def test_trusted_cidrs_use_the_xff_detection_extension() -> None:
    cidrs = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
    hcm, _ = _compiled(_config({"client_address": {"trusted_cidrs": cidrs}}))
    # Envoy refuses an original IP detection extension together with use_remote_address.
    assert not hcm.HasField("use_remote_address")
    assert hcm.xff_num_trusted_hops == 0
    [ext] = hcm.original_ip_detection_extensions
    assert ext.name == "envoy.http.original_ip_detection.xff"
    xff = xff_pb2.XffConfig()
    assert ext.typed_config.Unpack(xff)
    assert xff.xff_num_trusted_hops == 0
    # Each IPv4 CIDR also in its IPv4-mapped form: a dual-stack proxy writes that form.
    assert [(c.address_prefix, c.prefix_len.value) for c in xff.xff_trusted_cidrs.cidrs] == [
        ("10.0.0.0", 8),
        ("::ffff:10.0.0.0", 104),
        ("192.0.2.7", 32),
        ("::ffff:192.0.2.7", 128),
        ("2001:db8::", 32),
    ]
    assert xff.HasField("skip_xff_append") and xff.skip_xff_append.value is False


# --- the x-meshgate-* strip -------------------------------------------------------------------


@pytest.mark.parametrize(
    "listener", [{}, {"ip_rules": {"deny": ["10.9.0.0/16"]}}, {"compression": {}}]
)
def test_the_strip_is_first_on_every_listener(listener: dict[str, Any]) -> None:
    hcm, routes = _compiled(_config(listener))
    assert _filters(hcm)[0] == (CLIENT_HEADERS_FILTER, False)
    config = header_mutation_pb2.HeaderMutation()
    assert hcm.http_filters[0].typed_config.Unpack(config)
    [mutation] = config.mutations.request_mutations
    matcher = mutation.remove_on_match.key_matcher
    assert (matcher.prefix, matcher.ignore_case) == ("x-meshgate-", True)
    assert not config.mutations.response_mutations
    # on for every route: no route carries a config that could switch it off
    every_route = [r for vh in routes.virtual_hosts for r in vh.routes]
    assert all(CLIENT_HEADERS_FILTER not in r.typed_per_filter_config for r in every_route)
    assert all(
        CLIENT_HEADERS_FILTER not in vh.typed_per_filter_config for vh in routes.virtual_hosts
    )


def _strip(hcm: hcm_pb2.HttpConnectionManager) -> header_mutation_pb2.HeaderMutation:
    config = header_mutation_pb2.HeaderMutation()
    assert hcm.http_filters[0].typed_config.Unpack(config)
    return config


def test_claim_headers_of_every_issuer_are_stripped_on_every_route() -> None:
    config = yaml.safe_load(_config())
    config["issuers"] = [
        {
            "name": name,
            "issuer": f"https://{name}.example.com",
            "audiences": "api",
            "jwks": {"url": f"https://{name}.example.com/keys"},
            "claim_headers": claim_headers,
        }
        for name, claim_headers in (
            ("corp", {"X-User-Email": "email", "x-org": "org"}),
            ("partner", {"x-user-email": "mail"}),
        )
    ]
    # No route has a policy: a client must still not choose these headers for the upstream.
    hcm, _ = _compiled(yaml.safe_dump(config))
    removed = [m.remove_on_match.key_matcher for m in _strip(hcm).mutations.request_mutations]
    assert [(m.exact, m.ignore_case) for m in removed[1:]] == [
        ("x-user-email", False),  # Envoy lower-cases every request header name
        ("x-org", False),
    ]


def test_trusted_cidrs_set_the_external_address_and_drop_edge_headers() -> None:
    hcm, _ = _compiled(_config({"client_address": {"trusted_cidrs": ["10.0.0.0/8"]}}))
    mutations = _strip(hcm).mutations.request_mutations
    removed = [m.remove_on_match.key_matcher.exact for m in mutations[1:-1]]
    assert removed == [
        "x-envoy-original-path",
        "x-envoy-decorator-operation",
        "x-envoy-downstream-service-cluster",
        "x-envoy-downstream-service-node",
    ]
    added = mutations[-1].append
    assert (added.header.key, added.header.value) == (
        "x-envoy-external-address",
        "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    )
    assert added.append_action == added.OVERWRITE_IF_EXISTS_OR_ADD
    # Envoy sets and cleans these itself where it uses the peer address.
    for listener in ({}, {"client_address": {"trusted_hops": 1}}):
        hcm, _ = _compiled(_config(listener))
        assert len(_strip(hcm).mutations.request_mutations) == 1


@pytest.mark.parametrize(
    ("listeners", "compat"),
    [
        ([("::", 8080)], True),  # every address, IPv4 clients included
        ([("0::0", 8080)], True),
        ([("::1", 8080)], False),
        ([("0.0.0.0", 8080)], False),
        ([("::", 8080), ("0.0.0.0", 8080)], False),  # IPv4 has a socket of its own
        ([("::", 8080), ("127.0.0.1", 8080)], False),
        ([("::", 8080), ("0.0.0.0", 8081)], True),
    ],
)
def test_unspecified_ipv6_address_binds_dual_stack(
    listeners: list[tuple[str, int]], compat: bool
) -> None:
    config = yaml.safe_load(_config())
    first = config["listeners"][0]
    config["listeners"] = [
        {**first, "name": f"l{i}", "address": address, "port": port}
        for i, (address, port) in enumerate(listeners)
    ]
    snapshot = compile_snapshot(parse_config(yaml.safe_dump(config)).config)
    listener = snapshot.of_type(LISTENER)["l0"].unpack()
    assert isinstance(listener, listener_pb2.Listener)
    assert listener.address.socket_address.ipv4_compat is compat


# --- IP rules: where the config goes ----------------------------------------------------------


def _per_filter(msg: rc_pb2.Route | rc_pb2.VirtualHost) -> rbac_config_pb2.RBAC | None:
    if IP_RBAC_FILTER not in msg.typed_per_filter_config:
        return None
    per_route = rbac_pb2.RBACPerRoute()
    assert msg.typed_per_filter_config[IP_RBAC_FILTER].Unpack(per_route)
    assert per_route.rbac.HasField("rules")  # an empty RBACPerRoute would switch RBAC off
    return per_route.rbac.rules


def _listener_rules(hcm: hcm_pb2.HttpConnectionManager) -> tuple[bool, rbac_config_pb2.RBAC | None]:
    [flt] = [f for f in hcm.http_filters if f.name == IP_RBAC_FILTER]
    config = rbac_pb2.RBAC()
    assert flt.typed_config.Unpack(config)
    return flt.disabled, (config.rules if config.HasField("rules") else None)


def test_no_rules_no_filter_and_no_mapper() -> None:
    hcm, _ = _compiled(_config())
    assert _filters(hcm) == [(CLIENT_HEADERS_FILTER, False), (ROUTER, False)]
    assert all("ip_denied" not in str(m) for m in hcm.local_reply_config.mappers)


def test_listener_rules_need_no_per_route_config() -> None:
    hcm, routes = _compiled(_config({"ip_rules": {"deny": ["203.0.113.0/24"]}}))
    assert _filters(hcm) == [
        (CLIENT_HEADERS_FILTER, False),
        (IP_RBAC_FILTER, False),
        (ROUTER, False),
    ]
    disabled, rules = _listener_rules(hcm)
    assert not disabled and rules is not None and IP_DENY_POLICY in rules.policies
    assert all(_per_filter(vh) is None for vh in routes.virtual_hosts)
    assert all(_per_filter(r) is None for vh in routes.virtual_hosts for r in vh.routes)


def test_route_rules_only_switch_the_filter_on_for_that_route() -> None:
    hcm, routes = _compiled(_config(route={"ip_rules": {"allow": ["10.0.0.0/8"]}}))
    assert (IP_RBAC_FILTER, True) in _filters(hcm)
    assert _listener_rules(hcm) == (True, None)
    admin, www = routes.virtual_hosts
    assert _per_filter(admin) is None and _per_filter(www) is None
    r, rest = admin.routes
    assert _per_filter(r) is not None
    assert _per_filter(rest) is None and _per_filter(www.routes[0]) is None


def test_denials_get_a_json_mapper_before_the_catch_all() -> None:
    hcm, _ = _compiled(_config(vhost={"ip_rules": {"deny": ["203.0.113.0/24"]}}))
    mappers = list(hcm.local_reply_config.mappers)
    [at] = [i for i, m in enumerate(mappers) if IP_DENIED_DETAILS in str(m.filter)]
    assert at == len(mappers) - 2
    body = mappers[at].body_format_override
    assert body.json_format.fields["error"].string_value == "ip_denied"
    assert body.json_format.fields["request_id"].string_value == "%REQ(X-REQUEST-ID)%"
    assert body.content_type == "application/json"
    catch_all = mappers[-1].filter
    assert catch_all.HasField("response_flag_filter") and not catch_all.response_flag_filter.flags


# --- IP rules: what the combined policy means -------------------------------------------------


def _matches(principal: rbac_config_pb2.Principal, ip: str) -> bool:
    """Envoy's reading of the principals this feature emits."""
    kind = principal.WhichOneof("identifier")
    if kind == "remote_ip":
        net = ipaddress.ip_network(
            f"{principal.remote_ip.address_prefix}/{principal.remote_ip.prefix_len.value}"
        )
        addr = ipaddress.ip_address(ip)
        return addr.version == net.version and addr in net
    if kind == "or_ids":
        return any(_matches(p, ip) for p in principal.or_ids.ids)
    if kind == "not_id":
        return not _matches(principal.not_id, ip)
    raise AssertionError(f"unexpected principal {kind}")


def _allowed(rules: rbac_config_pb2.RBAC | None, ip: str) -> bool:
    if rules is None:
        return True
    assert rules.action == rbac_config_pb2.RBAC.DENY
    [(name, policy)] = rules.policies.items()
    assert name == IP_DENY_POLICY
    assert [p.any for p in policy.permissions] == [True]
    return not any(_matches(p, ip) for p in policy.principals)


LEVELS = _config(
    {"ip_rules": {"deny": ["10.66.0.0/16", "2001:db8:bad::/48"]}},
    {"ip_rules": {"allow": ["10.0.0.0/8", "2001:db8::/32"]}},
    {"ip_rules": {"allow": ["10.1.0.0/16", "2001:db8:1::/48"], "deny": ["10.1.2.3"]}},
)


@pytest.mark.parametrize(
    ("ip", "route_r", "admin_rest", "www"),
    [
        ("10.1.5.5", True, True, True),  # in every allow list
        ("10.1.2.3", False, True, True),  # the route's deny wins over its own allow
        ("10.9.9.9", False, True, True),  # outside the route's allow list only
        ("10.66.1.1", False, False, False),  # the listener's deny wins over the vhost's allow
        ("198.51.100.1", False, False, True),  # outside the vhost's allow list
        ("2001:db8:1::7", True, True, True),
        ("2001:db8:2::7", False, True, True),
        ("2001:db8:bad::1", False, False, False),
        ("2001:db9::1", False, False, True),
        # An IPv4 client on a dual-stack socket, or in the x-forwarded-for of a dual-stack
        # proxy, is '::ffff:a.b.c.d': the IPv4 rules apply to it all the same.
        ("::ffff:10.1.5.5", True, True, True),
        ("::ffff:10.1.2.3", False, True, True),
        ("::ffff:10.66.1.1", False, False, False),
        ("::ffff:198.51.100.1", False, False, True),
        # Other embeddings of IPv4 (the deprecated IPv4-compatible form) are other addresses.
        ("::10.66.1.1", False, False, True),
    ],
)
def test_levels_combine_and_deny_wins(ip: str, route_r: bool, admin_rest: bool, www: bool) -> None:
    hcm, routes = _compiled(LEVELS)
    disabled, listener_rules = _listener_rules(hcm)
    assert not disabled
    admin, www_vh = routes.virtual_hosts
    r, rest = admin.routes

    def effective(route: rc_pb2.Route, vhost: rc_pb2.VirtualHost) -> rbac_config_pb2.RBAC | None:
        # Envoy: the most specific per-filter config replaces the filter's own
        for level in (_per_filter(route), _per_filter(vhost)):
            if level is not None:
                return level
        return listener_rules

    assert _allowed(effective(r, admin), ip) is route_r
    assert _allowed(effective(rest, admin), ip) is admin_rest
    assert _allowed(effective(www_vh.routes[0], www_vh), ip) is www


def test_only_deny_rules_let_everyone_else_in() -> None:
    hcm, routes = _compiled(_config(route={"ip_rules": {"deny": ["192.0.2.0/24"]}}))
    rules = _per_filter(routes.virtual_hosts[0].routes[0])
    assert not _allowed(rules, "192.0.2.9")
    assert _allowed(rules, "198.51.100.1") and _allowed(rules, "::1")


# --- the guide (docs/security.md) -------------------------------------------------------------


def test_guide_error_samples_are_real() -> None:
    """Each sample error line in the guide is the exact output of some invalid fixture."""
    samples = [
        line.replace("gateway.yaml", "{file}", 1)
        for line in GUIDE.read_text(encoding="utf-8").splitlines()
        if line.startswith("gateway.yaml")
    ]
    assert len(samples) >= 8
    real = {
        line
        for path in (TESTS / "fixtures" / "invalid").glob("*.expected")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert [s for s in samples if s not in real] == []


def test_guide_has_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.integration
@pytest.mark.parametrize(("line", "text"), EXAMPLES, ids=[f"line{n}" for n, _ in EXAMPLES])
def test_guide_example_is_accepted_by_envoy(line: int, text: str) -> None:
    source = f"{GUIDE.name}:{line}"
    try:
        loaded = parse_config(text, source)
    except ConfigError as exc:
        pytest.fail(f"the example at {source} does not load:\n{exc}")
    snapshot = compile_snapshot(loaded.config, secrets=placeholder_secrets(loaded.config))
    objections = asyncio.run(ValidateModeValidator().validate(snapshot))
    assert objections == [], f"Envoy refuses the example at {source}"
