"""The protection compiler and its checks, without Envoy running traffic.

The golden files pin whole outputs; these tests pin the rules behind them (a filter is in the
chain only when used, the chain's order, how route settings override the listener's and the
virtual host's), the guide's error samples, and that every example of docs/protection.md loads,
compiles and is accepted by Envoy itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.loader import ConfigError, parse_config
from tests.paths import ROOT, TESTS
from tests.test_docs_examples import examples
from xds_server.compiler import compile_snapshot
from xds_server.compiler.features.compression import compressor_name
from xds_server.compiler.features.protection import CACHE_STATUS_HEADER
from xds_server.compiler.filters import BUFFER, CACHE, CORS, RESPONSE_HEADERS
from xds_server.compiler.identity_names import CLIENT_HEADERS_FILTER
from xds_server.publish.validation import ValidateModeValidator
from xds_server.snapshot.snapshot import LISTENER, ROUTE

DOC = ROOT / "docs" / "protection.md"
EXAMPLES = examples(DOC.read_text(encoding="utf-8"))
FIXTURES = TESTS / "fixtures" / "invalid"


def _config(listener: dict[str, Any] | None = None, **route: Any) -> str:
    return yaml.safe_dump(
        {
            "listeners": [
                {
                    "name": "public",
                    "port": 8080,
                    "virtual_hosts": [
                        {
                            "name": "default",
                            "routes": [
                                {"name": "r", "match": {"prefix": "/r/"}, "service": "a", **route},
                                {"name": "rest", "match": {"prefix": "/"}, "service": "a"},
                            ],
                        }
                    ],
                    **(listener or {}),
                }
            ],
            "services": [{"name": "a", "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
        }
    )


def _compiled(text: str) -> tuple[hcm_pb2.HttpConnectionManager, list[rc_pb2.Route]]:
    snapshot = compile_snapshot(parse_config(text).config)
    listener = snapshot.of_type(LISTENER)["public"].unpack()
    routes = snapshot.of_type(ROUTE)["public"].unpack()
    assert isinstance(listener, listener_pb2.Listener)
    assert isinstance(routes, route_pb2.RouteConfiguration)
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    return hcm, list(routes.virtual_hosts[0].routes)


def _filters(hcm: hcm_pb2.HttpConnectionManager) -> list[tuple[str, bool]]:
    return [(f.name, f.disabled) for f in hcm.http_filters]


def test_no_filter_when_nothing_uses_one() -> None:
    hcm, routes = _compiled(_config())
    # The x-meshgate-* strip is on every listener (client_headers.py), the only exception.
    assert _filters(hcm) == [(CLIENT_HEADERS_FILTER, False), ("envoy.filters.http.router", False)]
    assert all(not r.typed_per_filter_config for r in routes)


def test_chain_order_and_which_filters_are_disabled() -> None:
    text = _config(
        {"compression": {"algorithms": ["gzip", "zstd"]}},
        cors={"allow_origins": ["https://a.example"]},
        max_request_bytes=10,
        cache=True,
    )
    hcm, _ = _compiled(text)
    assert _filters(hcm) == [
        (CLIENT_HEADERS_FILTER, False),
        (CORS, True),
        (compressor_name("gzip"), False),
        (compressor_name("zstd"), False),
        (RESPONSE_HEADERS, True),
        (BUFFER, True),
        (CACHE, True),
        ("envoy.filters.http.router", False),
    ]


def test_route_settings_only_on_their_route() -> None:
    _, routes = _compiled(_config(max_request_bytes=10, cache=True))
    assert set(routes[0].typed_per_filter_config) == {BUFFER, RESPONSE_HEADERS, CACHE}
    assert not routes[1].typed_per_filter_config


@pytest.mark.parametrize(
    ("listener_compression", "route_compression", "expected"),
    [
        (True, None, None),  # on by default, nothing per route
        (True, False, "disabled"),
        (True, True, None),  # already on
        (False, True, "enabled"),  # filters disabled in the chain, on for this route
        (False, False, None),  # no filter at all
    ],
)
def test_compression_per_route(
    listener_compression: bool, route_compression: bool | None, expected: str | None
) -> None:
    listener: dict[str, Any] = {"compression": {}} if listener_compression else {}
    route = {} if route_compression is None else {"compression": route_compression}
    hcm, routes = _compiled(_config(listener, **route))
    names = {name for name, _ in _filters(hcm)}
    configs = routes[0].typed_per_filter_config
    gzip = compressor_name("gzip")
    if expected is None:
        assert gzip not in configs
        return
    assert gzip in names
    config = rc_pb2.FilterConfig()
    configs[gzip].Unpack(config)
    assert config.disabled == (expected == "disabled")
    assert config.HasField("config") == (expected == "enabled")


def _response_headers(route: rc_pb2.Route) -> dict[str, str]:
    config = header_mutation_pb2.HeaderMutationPerRoute()
    route.typed_per_filter_config[RESPONSE_HEADERS].Unpack(config)
    return {
        m.append.header.key: m.append.header.value
        for m in config.mutations.response_mutations
        if m.HasField("append")
    }


def test_route_security_headers_replace_the_virtual_hosts_as_a_whole() -> None:
    doc = yaml.safe_load(_config(security_headers={"frame_options": "SAMEORIGIN"}))
    doc["listeners"][0]["virtual_hosts"][0]["security_headers"] = {"hsts": {}}
    _, routes = _compiled(yaml.safe_dump(doc))
    own, inherited = _response_headers(routes[0]), _response_headers(routes[1])
    assert own["x-frame-options"] == "SAMEORIGIN" and "strict-transport-security" not in own
    assert inherited["x-frame-options"] == "DENY"
    assert inherited["strict-transport-security"] == "max-age=31536000; includeSubDomains"


def test_cached_route_says_hit_or_miss_and_keeps_security_headers() -> None:
    doc = yaml.safe_load(_config(cache=True))
    doc["listeners"][0]["virtual_hosts"][0]["security_headers"] = {}
    _, routes = _compiled(yaml.safe_dump(doc))
    headers = _response_headers(routes[0])
    assert "hit" in headers[CACHE_STATUS_HEADER] and "miss" in headers[CACHE_STATUS_HEADER]
    assert headers["x-content-type-options"] == "nosniff"


def test_server_header_modes() -> None:
    for mode, transformation, name in [
        ({}, hcm_pb2.HttpConnectionManager.PASS_THROUGH, ""),
        ({"mode": "pass_through"}, hcm_pb2.HttpConnectionManager.PASS_THROUGH, ""),
        ({"mode": "replace", "value": "shop"}, hcm_pb2.HttpConnectionManager.OVERWRITE, "shop"),
    ]:
        hcm, _ = _compiled(_config({"server_header": mode}))
        assert (hcm.server_header_transformation, hcm.server_name) == (transformation, name)


def test_edge_defaults_on_every_listener() -> None:
    hcm, _ = _compiled(_config())
    assert hcm.max_request_headers_kb.value == 60
    assert hcm.request_headers_timeout.seconds == 10
    assert hcm.stream_idle_timeout.seconds == 300
    assert hcm.common_http_protocol_options.idle_timeout.seconds == 3600
    assert hcm.http2_protocol_options.max_concurrent_streams.value == 100
    assert hcm.http2_protocol_options.initial_stream_window_size.value == 65536


@pytest.mark.parametrize(
    "route",
    [
        {"rewrite": {"prefix": "/"}},
        {"timeout": "1s"},
        {"request_headers": {"set": {"x-a": "1"}}},
        {"retries": {}},
    ],
)
def test_cache_refuses_what_the_cache_filter_would_skip(route: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(cache=True, **route))
    [problem] = info.value.problems
    assert problem.path.endswith("routes[0].cache")
    assert f"'{next(iter(route))}'" in problem.message


def test_guide_error_samples_are_real() -> None:
    """Each sample error line in the guide is the exact output of some invalid fixture."""
    samples = [
        line.replace("gateway.yaml", "{file}", 1)
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("gateway.yaml")
    ]
    assert len(samples) >= 8
    real = {
        line
        for path in FIXTURES.glob("protection_*.expected")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert [s for s in samples if s not in real] == []


def test_protection_guide_has_examples() -> None:
    assert len(EXAMPLES) >= 7


@pytest.mark.integration
@pytest.mark.parametrize(("line", "text"), EXAMPLES, ids=[f"line{n}" for n, _ in EXAMPLES])
def test_protection_guide_example_is_accepted_by_envoy(line: int, text: str) -> None:
    source = f"{DOC.name}:{line}"
    try:
        loaded = parse_config(text, source)
    except ConfigError as exc:
        pytest.fail(f"the example at {source} does not load:\n{exc}")
    objections = asyncio.run(ValidateModeValidator().validate(compile_snapshot(loaded.config)))
    assert objections == [], f"Envoy refuses the example at {source}"
