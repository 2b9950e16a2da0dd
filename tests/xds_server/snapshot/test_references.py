"""The reference walker, on hand-built snapshots: every place a resource can name another.

A filter that names a cluster the snapshot does not have must make the snapshot inconsistent
(never published), with an error naming the listener, the filter, the field and the cluster.
The same walk answers which EDS and RDS names Envoy will subscribe to (the ADS planner) and
feeds the validate-mode bootstrap.
"""

from __future__ import annotations

import importlib

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.ratelimit.v3 import rls_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rate_limit_quota.v3 import rate_limit_quota_pb2 as rlq_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2, descriptor_pool, duration_pb2
from google.protobuf.message import Message

from meshgate.loader import load_config
from tests.paths import ROOT
from tests.xds_client import cluster, endpoints, route
from xds_server.compiler import compile_snapshot
from xds_server.snapshot.references import resource_references
from xds_server.snapshot.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    InconsistentSnapshotError,
    Resource,
    Snapshot,
)
from xds_server.snapshot.walker import CLUSTER_FIELDS

QUICKSTART = ROOT / "examples" / "quickstart.yaml"
ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def _any(msg: Message) -> any_pb2.Any:
    if isinstance(msg, any_pb2.Any):
        return msg  # already packed (a type the test wants left unknown)
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _grpc(cluster_name: str) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster_name)
    )


def _uri(cluster_name: str) -> http_uri_pb2.HttpUri:
    return http_uri_pb2.HttpUri(
        uri=f"http://{cluster_name}/",
        cluster=cluster_name,
        timeout=duration_pb2.Duration(seconds=1),
    )


def _listener(
    name: str = "public",
    filters: list[tuple[str, Message]] | None = None,
    **hcm_fields: object,
) -> Resource:
    """A listener whose HCM asks RDS for ``name`` and runs ``filters`` before the router."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(route_config_name=name, config_source=ADS),
        http_filters=[
            *(hcm_pb2.HttpFilter(name=n, typed_config=_any(c)) for n, c in filters or []),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
            ),
        ],
        **hcm_fields,  # type: ignore[arg-type]
    )
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm)
            )
        ]
    )
    return Resource.of(name, listener_pb2.Listener(name=name, filter_chains=[chain]))


def _snapshot(*resources: Resource, clusters: tuple[str, ...] = ("app",)) -> Snapshot:
    """``resources`` plus EDS clusters ``clusters`` with endpoints and a route configuration
    ``public`` sending everything to the first of them."""
    base = [cluster(c) for c in clusters] + [endpoints(c, 8000) for c in clusters]
    names = {(r.type_url, r.name) for r in resources}
    if (ROUTE, "public") not in names:
        base.append(route("public", [clusters[0]]))
    if (LISTENER, "public") not in names:
        base.append(_listener())
    return Snapshot.build([*base, *resources])


# --- filters pointing at missing clusters ------------------------------------------------------


FILTER_CASES = [
    (
        "envoy.filters.http.ext_authz",
        ext_authz_pb2.ExtAuthz(grpc_service=_grpc("authz")),
        "grpc_service.envoy_grpc.cluster_name",
        "authz",
    ),
    (
        "envoy.filters.http.ext_authz",
        ext_authz_pb2.ExtAuthz(
            http_service=ext_authz_pb2.HttpService(server_uri=_uri("authz-http"))
        ),
        "http_service.server_uri.cluster",
        "authz-http",
    ),
    (
        "envoy.filters.http.ext_proc",
        ext_proc_pb2.ExternalProcessor(grpc_service=_grpc("transforms")),
        "grpc_service.envoy_grpc.cluster_name",
        "transforms",
    ),
    (
        "envoy.filters.http.ratelimit",
        rate_limit_pb2.RateLimit(
            domain="meshgate",
            rate_limit_service=rls_pb2.RateLimitServiceConfig(
                grpc_service=_grpc("ratelimit"), transport_api_version=config_source_pb2.V3
            ),
        ),
        "rate_limit_service.grpc_service.envoy_grpc.cluster_name",
        "ratelimit",
    ),
    (
        "envoy.filters.http.jwt_authn",
        jwt_pb2.JwtAuthentication(
            providers={
                "idp": jwt_pb2.JwtProvider(
                    issuer="https://idp.example",
                    remote_jwks=jwt_pb2.RemoteJwks(http_uri=_uri("jwks")),
                )
            }
        ),
        "providers[idp].remote_jwks.http_uri.cluster",
        "jwks",
    ),
    (
        "envoy.filters.http.rate_limit_quota",
        rlq_pb2.RateLimitQuotaFilterConfig(rlqs_server=_grpc("rlqs"), domain="meshgate"),
        "rlqs_server.envoy_grpc.cluster_name",
        "rlqs",
    ),
]


@pytest.mark.parametrize(
    ("filter_name", "config", "field", "missing"),
    FILTER_CASES,
    ids=[f"{c[0].rsplit('.', 1)[-1]}:{c[3]}" for c in FILTER_CASES],
)
def test_filter_naming_a_missing_cluster_is_inconsistent(
    filter_name: str, config: Message, field: str, missing: str
) -> None:
    snap = _snapshot(_listener(filters=[(filter_name, config)]))
    assert snap.consistency_errors() == [
        f"listener 'public': HTTP filter {filter_name!r} ({field}) references missing "
        f"cluster {missing!r}"
    ]
    with pytest.raises(InconsistentSnapshotError, match=missing):
        snap.check()


@pytest.mark.parametrize(("filter_name", "config", "field", "missing"), FILTER_CASES)
def test_filter_naming_an_existing_cluster_is_consistent(
    filter_name: str, config: Message, field: str, missing: str
) -> None:
    snap = _snapshot(_listener(filters=[(filter_name, config)]), clusters=("app", missing))
    assert snap.consistency_errors() == []
    assert any(r.name == missing for r in snap.references.of(LISTENER, "public"))


def test_tracing_and_access_log_clusters() -> None:
    tracing = hcm_pb2.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(
            name="envoy.tracers.zipkin",
            typed_config=_any(
                zipkin_pb2.ZipkinConfig(collector_cluster="zipkin", collector_endpoint="/api")
            ),
        )
    )
    log = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name="meshgate", grpc_service=_grpc("als"), transport_api_version=2
        )
    )
    access_log = accesslog_pb2.AccessLog(
        name="envoy.access_loggers.http_grpc", typed_config=_any(log)
    )
    snap = _snapshot(_listener(tracing=tracing, access_log=[access_log]))
    assert snap.consistency_errors() == [
        "listener 'public': tracing (provider.collector_cluster) references missing "
        "cluster 'zipkin'",
        "listener 'public': access log 'envoy.access_loggers.http_grpc' "
        "(common_config.grpc_service.envoy_grpc.cluster_name) references missing cluster 'als'",
    ]


def test_network_filter_clusters() -> None:
    tcp = tcp_proxy_pb2.TcpProxy(stat_prefix="db", cluster="postgres")
    res = Resource.of(
        "db",
        listener_pb2.Listener(
            name="db",
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.tcp_proxy", typed_config=_any(tcp)
                        )
                    ]
                )
            ],
        ),
    )
    assert _snapshot(res).consistency_errors() == [
        "listener 'db': network filter 'envoy.filters.network.tcp_proxy' (cluster) references "
        "missing cluster 'postgres'"
    ]


# --- route configurations ---------------------------------------------------------------------


def _routes(*routes: rc_pb2.Route, vhost_configs: dict[str, Message] | None = None) -> Resource:
    vhost = rc_pb2.VirtualHost(
        name="all",
        domains=["*"],
        routes=routes,
        typed_per_filter_config={k: _any(v) for k, v in (vhost_configs or {}).items()},
    )
    return Resource.of("public", route_pb2.RouteConfiguration(name="public", virtual_hosts=[vhost]))


def test_route_targets_mirrors_and_weighted_clusters() -> None:
    weighted = rc_pb2.WeightedCluster(
        clusters=[
            rc_pb2.WeightedCluster.ClusterWeight(name="app", weight={"value": 90}),
            rc_pb2.WeightedCluster.ClusterWeight(name="canary", weight={"value": 10}),
        ]
    )
    snap = _snapshot(
        _routes(
            rc_pb2.Route(
                name="split",
                match=rc_pb2.RouteMatch(prefix="/s"),
                route=rc_pb2.RouteAction(weighted_clusters=weighted),
            ),
            rc_pb2.Route(
                match=rc_pb2.RouteMatch(prefix="/"),
                route=rc_pb2.RouteAction(
                    cluster="gone",
                    request_mirror_policies=[
                        rc_pb2.RouteAction.RequestMirrorPolicy(cluster="shadow")
                    ],
                ),
            ),
        )
    )
    assert snap.consistency_errors() == [
        "route configuration 'public': route 'split' "
        "(route.weighted_clusters.clusters[1].name) references missing cluster 'canary'",
        "route configuration 'public': virtual host 'all' (routes[1].route.cluster) references "
        "missing cluster 'gone'",
        "route configuration 'public': virtual host 'all' "
        "(routes[1].route.request_mirror_policies[0].cluster) references missing cluster 'shadow'",
    ]


def test_per_filter_configs_at_every_level() -> None:
    override = ext_proc_pb2.ExtProcPerRoute(
        overrides=ext_proc_pb2.ExtProcOverrides(grpc_service=_grpc("per-route"))
    )
    vhost_override = ext_proc_pb2.ExtProcPerRoute(
        overrides=ext_proc_pb2.ExtProcOverrides(grpc_service=_grpc("per-vhost"))
    )
    snap = _snapshot(
        _routes(
            rc_pb2.Route(
                name="r",
                match=rc_pb2.RouteMatch(prefix="/"),
                route=rc_pb2.RouteAction(cluster="app"),
                typed_per_filter_config={"envoy.filters.http.ext_proc": _any(override)},
            ),
            vhost_configs={"envoy.filters.http.ext_proc": vhost_override},
        )
    )
    assert snap.consistency_errors() == [
        "route configuration 'public': route 'r' (typed_per_filter_config["
        "envoy.filters.http.ext_proc].overrides.grpc_service.envoy_grpc.cluster_name) "
        "references missing cluster 'per-route'",
        "route configuration 'public': virtual host 'all' (typed_per_filter_config["
        "envoy.filters.http.ext_proc].overrides.grpc_service.envoy_grpc.cluster_name) "
        "references missing cluster 'per-vhost'",
    ]


def test_identical_per_filter_configs_are_each_checked() -> None:
    """The walk remembers a typed config by its bytes; every route using it still counts."""
    cfg = ext_proc_pb2.ExtProcPerRoute(
        overrides=ext_proc_pb2.ExtProcOverrides(grpc_service=_grpc("transforms"))
    )
    routes = [
        rc_pb2.Route(
            name=f"r{i}",
            match=rc_pb2.RouteMatch(prefix=f"/{i}"),
            route=rc_pb2.RouteAction(cluster="app"),
            typed_per_filter_config={"envoy.filters.http.ext_proc": _any(cfg)},
        )
        for i in range(3)
    ]
    snap = _snapshot(_routes(*routes))
    [error] = snap.consistency_errors()  # one missing cluster, reported where first named
    assert "route 'r0'" in error and "'transforms'" in error


# --- clusters ---------------------------------------------------------------------------------


def test_eds_cluster_needs_its_endpoints() -> None:
    snap = Snapshot.build([cluster("app"), route("public", ["app"]), _listener()])
    assert snap.consistency_errors() == [
        "cluster 'app': eds_cluster_config references missing endpoints resource 'app'"
    ]


def test_aggregate_cluster_names_its_clusters() -> None:
    agg = cluster_pb2.Cluster(
        name="both",
        connect_timeout=duration_pb2.Duration(seconds=1),
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name="envoy.clusters.aggregate",
            typed_config=_any(aggregate_pb2.ClusterConfig(clusters=["app", "backup"])),
        ),
    )
    snap = _snapshot(Resource.of("both", agg))
    assert snap.consistency_errors() == [
        "cluster 'both': cluster_type.clusters[1] references missing cluster 'backup'"
    ]


def test_config_sources_name_the_management_server_not_a_snapshot_cluster() -> None:
    """An RDS or EDS config source pointing at a bootstrap cluster is not a reference."""
    api = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC, grpc_services=[_grpc("xds_cluster")]
        )
    )
    eds = cluster_pb2.Cluster(
        name="elsewhere",
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=api),
    )
    assert resource_references("elsewhere", eds) == ()
    snap = _snapshot(Resource.of("elsewhere", eds))
    assert snap.consistency_errors() == []


def test_unknown_typed_config_is_skipped() -> None:
    """A type the descriptor pool does not know cannot be read, so it names nothing."""
    unknown = any_pb2.Any(type_url="type.googleapis.com/example.Unknown", value=b"\x0a\x01x")
    snap = _snapshot(_listener(filters=[("example.unknown", unknown)]))
    assert snap.consistency_errors() == []
    assert {r.name for r in snap.references.of(LISTENER, "public")} == {"public"}  # its RDS


# --- the other readers ------------------------------------------------------------------------


def test_expected_names_follow_what_envoy_holds() -> None:
    snap = _snapshot(clusters=("app", "other"))
    refs = snap.references
    held = {name: res.version for name, res in snap.of_type(CLUSTER).items()}
    assert refs.expected_names(ENDPOINT, held) == {"app", "other"}
    assert refs.expected_names(ENDPOINT, {"app": held["app"]}) == {"app"}
    assert refs.expected_names(ENDPOINT, {"app": "an-older-version"}) == frozenset()
    listeners = {n: r.version for n, r in snap.of_type(LISTENER).items()}
    assert refs.expected_names(ROUTE, listeners) == {"public"}
    assert refs.expected_names(CLUSTER, held) == frozenset()


def test_references_are_memoised_per_snapshot_object() -> None:
    first, second = _snapshot(), _snapshot()
    assert first.references is first.references
    assert first.references is not second.references
    assert first.version == second.version


def test_compiled_snapshots_are_consistent_and_name_every_service() -> None:
    snap = compile_snapshot(load_config(QUICKSTART).config)
    assert snap.consistency_errors() == []
    named = {r.name for refs in snap.references.of_type(ROUTE).values() for r in refs}
    assert named == set(snap.of_type(CLUSTER))


def test_cluster_field_table_matches_the_api() -> None:
    """Every (message, field) the walker reads exists in xds-protos (a typo would silently
    make the walker blind to that field)."""
    modules = {
        "envoy.config.core.v3": "envoy.config.core.v3.grpc_service_pb2",
        "envoy.config.trace.v3": "envoy.config.trace.v3.zipkin_pb2",
        "envoy.extensions.access_loggers.fluentd.v3": (
            "envoy.extensions.access_loggers.fluentd.v3.fluentd_pb2"
        ),
        "envoy.extensions.tracers.fluentd.v3": "envoy.extensions.tracers.fluentd.v3.fluentd_pb2",
        "envoy.extensions.filters.http.gcp_authn.v3": (
            "envoy.extensions.filters.http.gcp_authn.v3.gcp_authn_pb2"
        ),
        "envoy.extensions.filters.udp.udp_proxy.v3": (
            "envoy.extensions.filters.udp.udp_proxy.v3.route_pb2"
        ),
        "envoy.extensions.router.cluster_specifiers.matcher.v3": (
            "envoy.extensions.router.cluster_specifiers.matcher.v3.matcher_pb2"
        ),
        "envoy.extensions.router.cluster_specifiers.lua.v3": (
            "envoy.extensions.router.cluster_specifiers.lua.v3.lua_pb2"
        ),
    }
    for module in modules.values():
        importlib.import_module(module)
    importlib.import_module("envoy.config.trace.v3.datadog_pb2")
    importlib.import_module("envoy.config.trace.v3.lightstep_pb2")
    pool = descriptor_pool.Default()
    for message, fields in CLUSTER_FIELDS.items():
        desc = pool.FindMessageTypeByName(message)
        for name in fields:
            assert name in desc.fields_by_name, f"{message} has no field {name!r}"
            assert not desc.fields_by_name[name].GetOptions().deprecated
