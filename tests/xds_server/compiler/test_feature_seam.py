"""The compiler's feature seam: the filter order table is the only authority on order, the
rules of the seam are enforced, a feature's own resources join the snapshot, and the
compiler keeps no state between compiles.

What each feature compiles is pinned by the goldens and the per-feature compile tests.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

from meshgate.config import GatewayConfig
from meshgate.loader import parse_config
from tests.paths import ROOT
from xds_server.compiler import FEATURES, compile_resources, compile_snapshot
from xds_server.compiler.context import CompileContext, ListenerContext
from xds_server.compiler.feature import Feature, FeatureError, Features
from xds_server.compiler.filters import (
    HTTP_FILTER_ORDER,
    FilterOrderError,
    http_filter,
    position,
)
from xds_server.compiler.identity_names import CLIENT_HEADERS_FILTER
from xds_server.snapshot.snapshot import (
    CLUSTER,
    LISTENER,
    InconsistentSnapshotError,
    Resource,
    Snapshot,
)

EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _config(service: str = "a", **route: Any) -> GatewayConfig:
    text = yaml.safe_dump(
        {
            "listeners": [
                {
                    "name": "public",
                    "port": 8080,
                    "virtual_hosts": [
                        {
                            "name": "default",
                            "routes": [
                                {"name": "r", "match": {"prefix": "/"}, "service": service, **route}
                            ],
                        }
                    ],
                }
            ],
            "services": [{"name": service, "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
        }
    )
    return parse_config(text).config


def _http_filters(snapshot: Snapshot) -> list[str]:
    listener = snapshot.of_type(LISTENER)["public"].unpack()
    assert isinstance(listener, listener_pb2.Listener)
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    return [f.name for f in hcm.http_filters]


# --- the order table --------------------------------------------------------------------------


def test_the_order_table() -> None:
    """Changing this list changes what every response goes through: review it with the
    reasons in filters.py (and expect golden diffs)."""
    assert [slot.name for slot in HTTP_FILTER_ORDER] == [
        "meshgate.client_headers",
        "envoy.filters.http.cors",
        "envoy.filters.http.compressor.",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.rbac.ip",
        "envoy.filters.http.oauth2.",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac.token",
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.buffer",
        "envoy.filters.http.cache",
        "envoy.filters.http.router",
    ]
    assert all(slot.why for slot in HTTP_FILTER_ORDER)


def test_every_registered_filter_has_a_row_and_the_router_is_last() -> None:
    Features.of(FEATURES)  # raises on a filter without a row or a row claimed twice
    declared = [name for f in FEATURES for name in f.http_filter_names]
    assert declared and all(position(name) < len(HTTP_FILTER_ORDER) - 1 for name in declared)
    assert position("envoy.filters.http.router") == len(HTTP_FILTER_ORDER) - 1


def test_a_family_row_keeps_its_features_order() -> None:
    snapshot = compile_snapshot(
        parse_config(
            yaml.safe_dump(
                {
                    "listeners": [
                        {
                            "name": "public",
                            "port": 8080,
                            "compression": {"algorithms": ["zstd", "gzip", "brotli"]},
                            "virtual_hosts": [
                                {
                                    "name": "d",
                                    "cors": {"allow_origins": ["https://a.example"]},
                                    "routes": [
                                        {"match": {"prefix": "/"}, "service": "a", "cache": True}
                                    ],
                                }
                            ],
                        }
                    ],
                    "services": [{"name": "a"}],
                }
            )
        ).config
    )
    assert _http_filters(snapshot) == [
        CLIENT_HEADERS_FILTER,
        "envoy.filters.http.cors",
        "envoy.filters.http.compressor.zstd",
        "envoy.filters.http.compressor.gzip",
        "envoy.filters.http.compressor.brotli",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.cache",
        "envoy.filters.http.router",
    ]


def test_a_route_that_uses_no_feature_pays_for_no_filter() -> None:
    # Nothing but the strip of client-sent x-meshgate-* headers, which every route needs.
    assert _http_filters(compile_snapshot(_config())) == [
        CLIENT_HEADERS_FILTER,
        "envoy.filters.http.router",
    ]


# --- the seam's rules -------------------------------------------------------------------------


class _ExtAuthz(Feature):
    """A test feature: an ext_authz filter calling a gRPC cluster of its own."""

    name = "test-ext-authz"
    http_filter_names = (EXT_AUTHZ,)
    own_cluster: ClassVar[bool] = True

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        grpc = grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="authz")
        )
        return [http_filter(EXT_AUTHZ, ext_authz_pb2.ExtAuthz(grpc_service=grpc))]

    def extra_resources(self, ctx: CompileContext) -> list[Resource]:
        if not self.own_cluster:
            return []
        socket = address_pb2.SocketAddress(address="127.0.0.1", port_value=9001)
        endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=socket)
            )
        )
        authz = cluster_pb2.Cluster(
            name="authz",
            type=cluster_pb2.Cluster.STATIC,
            connect_timeout=duration_pb2.Duration(seconds=1),
            load_assignment=endpoint_pb2.ClusterLoadAssignment(
                cluster_name="authz",
                endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
            ),
        )
        return [Resource.of("authz", authz)]


class _ExtAuthzWithoutCluster(_ExtAuthz):
    name = "test-ext-authz-no-cluster"
    own_cluster = False


@pytest.fixture
def ext_authz_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row a real ext_authz feature would add to the table (after CORS)."""
    from xds_server.compiler import filters

    rows = list(filters.HTTP_FILTER_ORDER)
    rows.insert(2, filters.Slot(EXT_AUTHZ, "after CORS, so a preflight needs no credentials"))
    monkeypatch.setattr(filters, "HTTP_FILTER_ORDER", tuple(rows))


def compile_snapshot_with(config: GatewayConfig, *extra: Feature) -> Snapshot:
    features = [*FEATURES, *(extra or [_ExtAuthz()])]
    return Snapshot.build(compile_resources(config, features=features)).check()


def test_a_feature_filter_without_a_row_is_refused() -> None:
    with pytest.raises(FilterOrderError) as info:
        compile_resources(_config(), features=[*FEATURES, _ExtAuthz()])
    assert str(info.value) == (
        "feature 'test-ext-authz': HTTP filter 'envoy.filters.http.ext_authz' has no row in "
        "HTTP_FILTER_ORDER (xds_server/compiler/filters.py); add one where it belongs"
    )


@pytest.mark.usefixtures("ext_authz_row")
def test_a_feature_filter_goes_where_its_row_says() -> None:
    snapshot = compile_snapshot_with(_config(cors={"allow_origins": ["https://a.example"]}))
    assert _http_filters(snapshot) == [
        CLIENT_HEADERS_FILTER,
        "envoy.filters.http.cors",
        EXT_AUTHZ,
        "envoy.filters.http.router",
    ]
    assert set(snapshot.of_type(CLUSTER)) == {"a", "authz"}


@pytest.mark.usefixtures("ext_authz_row")
def test_a_filter_naming_a_cluster_nobody_adds_is_never_published() -> None:
    with pytest.raises(InconsistentSnapshotError) as info:
        compile_snapshot_with(_config(), _ExtAuthzWithoutCluster())
    assert str(info.value) == (
        "listener 'public': HTTP filter 'envoy.filters.http.ext_authz' "
        "(grpc_service.envoy_grpc.cluster_name) references missing cluster 'authz'"
    )


@pytest.mark.usefixtures("ext_authz_row")
def test_a_feature_resource_may_not_replace_the_configs() -> None:
    config = _config(service="authz")  # a service named like the feature's cluster
    with pytest.raises(InconsistentSnapshotError, match="feature 'test-ext-authz' adds resource"):
        compile_resources(config, features=[*FEATURES, _ExtAuthz()])


def test_an_undeclared_filter_is_refused() -> None:
    class Sneaky(Feature):
        name = "sneaky"
        http_filter_names = ("envoy.filters.http.cors",)

        def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
            return [http_filter("envoy.filters.http.buffer", ext_authz_pb2.ExtAuthz())]

    cors_free = [f for f in FEATURES if f.name != "cors"]
    with pytest.raises(FilterOrderError, match="'sneaky' emits HTTP filter"):
        compile_resources(_config(), features=[*cors_free, Sneaky()])


def test_two_features_may_not_share_a_row() -> None:
    class OtherCors(Feature):
        name = "other-cors"
        http_filter_names = ("envoy.filters.http.cors",)

        def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
            return []

    with pytest.raises(FilterOrderError, match="'cors' and 'other-cors' both declare"):
        Features.of([*FEATURES, OtherCors()])


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (type("Nameless", (Feature,), {})(), "Nameless has no name"),
        (
            type("Declares", (Feature,), {"name": "x", "http_filter_names": ("a",)})(),
            "feature 'x' declares HTTP filters but adds none",
        ),
    ],
)
def test_feature_rules(feature: Feature, message: str) -> None:
    with pytest.raises(FeatureError, match=message):
        Features.of([feature])


def test_duplicate_feature_names() -> None:
    with pytest.raises(FeatureError, match="two features are named 'cors'"):
        Features.of([*FEATURES, FEATURES[2]])


def test_hooks_are_indexed_by_what_a_feature_overrides() -> None:
    features = Features.of(FEATURES)
    assert [f.name for f in features.patch_cluster] == ["resilience"]
    assert [f.name for f in features.expand_route] == ["traffic", "policy"]
    assert [f.name for f in features.http_filters] == [
        "cors",
        "compression",
        "protection",
        "client_headers",
        "ip_rules",
        "jwt",
        "oauth2",
        "policy",
    ]
    assert [f.name for f in features.patch_hcm] == [
        "protection",
        "client_address",
        "ip_rules",
        "jwt",
        "policy",
    ]
    assert [f.name for f in features.extra_resources] == ["jwt", "oauth2"]


# --- one compile context, no module state -----------------------------------------------------


def test_memo_lives_in_the_compile_context() -> None:
    """Two configs compiled alternately never see each other's whole-config facts."""
    retried = _config(retries={"num_retries": 2})
    plain = _config()
    first = compile_snapshot(retried)
    assert compile_snapshot(plain).of_type(CLUSTER) != first.of_type(CLUSTER)
    assert compile_snapshot(retried).version == first.version


_STATEFUL_DECORATORS = {"lru_cache", "cache", "cached_property"}


def _module_state(path: Path) -> list[str]:
    """Module-level mutable state in one file: lowercase names bound to a dict, list, set or
    call result at module level (UPPER_CASE names are constants), ``global`` statements and
    memoising decorators on module-level functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            value = None
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else ""
            if name and not name.startswith("__") and not name.lstrip("_").isupper():
                if isinstance(value, ast.Dict | ast.List | ast.Set | ast.Call):
                    found.append(f"{path.name}: {name}")
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                callee = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(callee, ast.Attribute | ast.Name):
                    ident = callee.attr if isinstance(callee, ast.Attribute) else callee.id
                    if ident in _STATEFUL_DECORATORS:
                        found.append(f"{path.name}: @{ident} {node.name}")
    found += [f"{path.name}: global" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    return found


def test_no_module_level_caches_in_the_compiler_or_the_reference_walker() -> None:
    files = [
        *sorted((ROOT / "xds_server" / "compiler").rglob("*.py")),
        ROOT / "xds_server" / "snapshot" / "references.py",
        ROOT / "xds_server" / "snapshot" / "walker.py",
    ]
    assert len(files) > 10
    assert [state for path in files for state in _module_state(path)] == []
