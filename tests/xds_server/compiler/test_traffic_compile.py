"""The routing compiler and its checks, without Envoy running traffic.

The golden files pin whole outputs; these tests pin the rules behind them (the order of the
sticky routes, what the sticky cookie regex accepts, which header values Envoy would refuse),
and that every example of docs/routing.md loads, compiles and is accepted by Envoy itself.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from meshgate.config.traffic import check_header_value
from meshgate.loader import ConfigError, parse_config
from tests.paths import ROOT
from tests.test_docs_examples import examples
from xds_server.compiler import compile_snapshot
from xds_server.compiler.features.traffic import _sticky_matcher
from xds_server.publish.validation import ValidateModeValidator
from xds_server.snapshot.snapshot import ROUTE

DOC = ROOT / "docs" / "routing.md"
EXAMPLES = examples(DOC.read_text(encoding="utf-8"))

SPLIT = """
listeners:
  - name: public
    port: 8080
    virtual_hosts:
      - name: default
        routes:
          - name: shop
            match: {prefix: /shop/}
            timeout: 3s
            rewrite: {prefix: /}
            split:
              sticky: STICKY
              variants:
                - {name: old, service: a, weight: 70}
                - {name: new, service: b, weight: 30}
                - {name: dark, service: b, weight: 0}
          - {name: rest, match: {prefix: /}, service: a}
services:
  - {name: a, endpoints: [{address: 10.0.0.1, port: 80}]}
  - {name: b, endpoints: [{address: 10.0.0.2, port: 80}]}
"""


def _routes(text: str) -> list[rc_pb2.Route]:
    snapshot = compile_snapshot(parse_config(text).config)
    [resource] = snapshot.of_type(ROUTE).values()
    rc = resource.unpack()
    assert isinstance(rc, route_pb2.RouteConfiguration)
    return list(rc.virtual_hosts[0].routes)


def test_sticky_routes_come_first_and_inherit_the_route() -> None:
    routes = _routes(SPLIT.replace("STICKY", "{header: x-variant}"))
    assert [r.name for r in routes] == ["shop/old", "shop/new", "shop", "rest"]
    for route, service in zip(routes[:2], ["a", "b"], strict=True):
        assert route.route.cluster == service
        assert route.route.timeout.seconds == 3  # everything else is the split route's
        assert route.route.prefix_rewrite == "/"
        assert route.match.prefix == "/shop/"
        assert [h.header.key for h in route.request_headers_to_add] == ["x-meshgate-variant"]
    weighted = routes[2].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in weighted] == [("a", 70), ("b", 30), ("b", 0)]


def test_sticky_cookie_is_set_by_each_cluster_weight() -> None:
    routes = _routes(SPLIT.replace("STICKY", "{cookie: {name: ab, ttl: 0, path: /shop}}"))
    weighted = routes[2].route.weighted_clusters.clusters
    assert [c.response_headers_to_add[0].header.value for c in weighted] == [
        "ab=old; Path=/shop",  # ttl 0: a session cookie, no Max-Age
        "ab=new; Path=/shop",
        "ab=dark; Path=/shop",
    ]
    assert not routes[0].response_headers_to_add  # sticky clients get no new cookie


def test_a_percent_in_a_cookie_path_is_not_a_command() -> None:
    routes = _routes(SPLIT.replace("STICKY", "{cookie: {path: /50%off}}"))
    value = routes[2].route.weighted_clusters.clusters[0].response_headers_to_add[0].header.value
    assert value == "mg-variant=old; Max-Age=2592000; Path=/50%%off"


@pytest.mark.parametrize(
    ("cookie", "matches"),
    [
        ("ab=old", True),
        ("x=1; ab=old", True),
        ("x=1;ab=old; y=2", True),
        ("ab=old;y=2", True),
        ("ab=older", False),  # another value that starts like it
        ("xab=old", False),  # another cookie whose name ends like it
        ("x=ab=old", False),  # inside another cookie's value
        ("ab=new", False),
        ("", False),
    ],
)
def test_sticky_cookie_regex(cookie: str, matches: bool) -> None:
    config = parse_config(SPLIT.replace("STICKY", "{cookie: {name: ab}}")).config
    split = config.listeners[0].virtual_hosts[0].routes[0].split
    assert split is not None and split.sticky is not None
    matcher = _sticky_matcher(split.sticky, split.variants[0])
    assert matcher.name == "cookie"
    # Envoy's safe_regex must match the whole header value, as fullmatch does.
    assert bool(re.fullmatch(matcher.string_match.safe_regex.regex, cookie)) is matches


def test_regex_special_characters_in_a_cookie_name_are_literal() -> None:
    config = parse_config(SPLIT.replace("STICKY", "{cookie: {name: a.b+c}}")).config
    split = config.listeners[0].virtual_hosts[0].routes[0].split
    assert split is not None and split.sticky is not None
    regex = _sticky_matcher(split.sticky, split.variants[0]).string_match.safe_regex.regex
    assert re.fullmatch(regex, "a.b+c=old")
    assert not re.fullmatch(regex, "aXbbc=old")


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "50%%",
        "%REQ(x-user)%",
        "%REQ(x-a?x-b):10%",
        "%START_TIME(%Y-%m-%dT%H:%M:%S)%",
        "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% and %%literal",
        "",
    ],
)
def test_header_values_envoy_accepts(value: str) -> None:
    assert check_header_value(value) == value


@pytest.mark.parametrize(
    ("value", "position"),
    [("50%", 2), ("% off", 0), ("%REQ(x)", 0), ("%req(x)%", 0), ("a %% b % c", 7)],
)
def test_header_values_envoy_refuses(value: str, position: int) -> None:
    with pytest.raises(ValueError, match=f"the '%' at position {position} does not start"):
        check_header_value(value)


def test_mutations_compile_in_order_set_then_add() -> None:
    text = SPLIT.replace(
        "          - {name: rest, match: {prefix: /}, service: a}",
        """          - name: rest
            match: {prefix: /}
            service: a
            request_headers: {add: {x-b: "2"}, set: {x-a: "1"}, remove: [x-c]}""",
    ).replace("STICKY", "{header: x-v}")
    rest = _routes(text)[-1]
    assert [(h.header.key, h.append_action) for h in rest.request_headers_to_add] == [
        ("x-a", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        ("x-b", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    ]
    # the variant header is stripped on every route that is not a split
    assert list(rest.request_headers_to_remove) == ["x-c", "x-meshgate-variant"]


def test_routing_guide_has_examples() -> None:
    assert len(EXAMPLES) >= 7


@pytest.mark.integration
@pytest.mark.parametrize(("line", "text"), EXAMPLES, ids=[f"line{n}" for n, _ in EXAMPLES])
def test_routing_guide_example_is_accepted_by_envoy(line: int, text: str) -> None:
    source = f"{DOC.name}:{line}"
    try:
        config = parse_config(text, source).config
    except ConfigError as exc:
        pytest.fail(f"the example at {source} does not load:\n{exc}")
    objections = asyncio.run(ValidateModeValidator().validate(compile_snapshot(config)))
    assert objections == [], f"Envoy refuses the example at {source}"
