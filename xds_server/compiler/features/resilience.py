"""Retries, circuit breakers, outlier detection, health checks and load balancing.

Route-level: the retry policy (the route's own, else its service's default). Cluster-level:
thresholds (with an automatic retry budget for retried services), outlier detection, active
health checks, the load-balancing policy and connection-pool settings.

Everything compiles to Envoy's own settings, so Envoy enforces it per request with no Python
hop; what this module decides is only *which* settings, and the safe defaults around them.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2, range_pb2
from google.protobuf import wrappers_pb2

from meshgate.config import GatewayConfig, Route, Service
from meshgate.config.resilience import (
    CircuitBreakers,
    HealthCheck,
    OutlierDetection,
    RetryBudget,
    RetryPolicy,
)
from xds_server.compiler.clusters import set_upstream_http_options, upstream_http_options
from xds_server.compiler.context import CompileContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.protos import duration, pack

#: The budget every retried service gets unless its circuit breakers say otherwise: retries
#: may be at most 20 % of the requests in flight (and always 3), so a failing service sees at
#: most 1.2x its load instead of (1 + num_retries)x.
AUTOMATIC_RETRY_BUDGET = RetryBudget(budget_percent=20.0, min_retry_concurrency=3)

#: How many times Envoy may re-pick a host for a retry to avoid the ones already tried.
HOST_SELECTION_ATTEMPTS = 3

LB_POLICIES: dict[str, cluster_pb2.Cluster.LbPolicy.ValueType] = {
    "round_robin": cluster_pb2.Cluster.ROUND_ROBIN,
    "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
    "ring_hash": cluster_pb2.Cluster.RING_HASH,
    "maglev": cluster_pb2.Cluster.MAGLEV,
    "random": cluster_pb2.Cluster.RANDOM,
}


# --- routes -------------------------------------------------------------------------------


def effective_retries(route: Route, config: GatewayConfig) -> RetryPolicy | None:
    """The route's own ``retries``, else its service's; a split has no single service, so it
    retries only by its own policy."""
    if route.retries is not None:
        return route.retries
    if route.service is not None:
        service = config.service(route.service)
        return service.retries if service is not None else None
    return None


def retry_policy(policy: RetryPolicy) -> rc_pb2.RetryPolicy:
    out = rc_pb2.RetryPolicy(
        retry_on=",".join(policy.retry_on),
        num_retries=wrappers_pb2.UInt32Value(value=policy.num_retries),
        retriable_status_codes=policy.retriable_status_codes,
    )
    if policy.other_endpoint:
        # A retry goes to another endpoint when there is one: retrying the endpoint that just
        # failed is the least likely way to succeed.
        out.retry_host_predicate.append(
            rc_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        )
        out.host_selection_retry_max_attempts = HOST_SELECTION_ATTEMPTS
    if policy.per_try_timeout is not None:
        out.per_try_timeout.CopyFrom(duration(policy.per_try_timeout))
    if policy.backoff is not None:
        out.retry_back_off.base_interval.CopyFrom(duration(policy.backoff.base_interval))
        if policy.backoff.max_interval is not None:
            out.retry_back_off.max_interval.CopyFrom(duration(policy.backoff.max_interval))
    return out


# --- which services are retried -------------------------------------------------------------


def _routes(config: GatewayConfig) -> Iterator[Route]:
    for listener in config.listeners:
        for vhost in listener.virtual_hosts:
            yield from vhost.routes


def _targets(route: Route) -> list[str]:
    if route.service is not None:
        return [route.service]
    if route.split is not None:
        return [v.service for v in route.split.variants]
    return []


def retried_services(config: GatewayConfig) -> frozenset[str]:
    """Names of the services some route (or their own default) retries requests to.

    A whole-config answer that every cluster needs: :class:`Resilience` computes it once per
    compile (in the compile context's memo), never once per service, which would cost
    services x routes (10 million steps for 10,000 routes over 1,000 services).
    """
    retried = {s.name for s in config.services if s.retries is not None and s.retries.active}
    for route in _routes(config):
        policy = effective_retries(route, config)
        if policy is not None and policy.active:
            retried.update(_targets(route))
    return frozenset(retried)


# --- clusters -------------------------------------------------------------------------------


def _uint32(value: int | None) -> wrappers_pb2.UInt32Value | None:
    return None if value is None else wrappers_pb2.UInt32Value(value=value)


def _retry_budget(
    budget: RetryBudget,
) -> circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget:
    return circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
        budget_percent=percent_pb2.Percent(value=budget.budget_percent),
        min_retry_concurrency=wrappers_pb2.UInt32Value(value=budget.min_retry_concurrency),
    )


def circuit_breakers(
    breakers: CircuitBreakers | None, retried: bool
) -> circuit_breaker_pb2.CircuitBreakers | None:
    """Thresholds for the default priority; a retried service without a retry limit of its
    own gets :data:`AUTOMATIC_RETRY_BUDGET`."""
    cb = breakers or CircuitBreakers()
    budget = cb.retry_budget
    if budget is None and cb.max_retries is None and retried:
        budget = AUTOMATIC_RETRY_BUDGET
    if breakers is None and budget is None:
        return None
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.DEFAULT,
        max_connections=_uint32(cb.max_connections),
        max_pending_requests=_uint32(cb.max_pending_requests),
        max_requests=_uint32(cb.max_requests),
        max_retries=_uint32(cb.max_retries),
    )
    if budget is not None:
        thresholds.retry_budget.CopyFrom(_retry_budget(budget))
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])


def outlier_detection(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    """Only the consecutive-error detectors asked for run: Envoy's success-rate detector
    (on by default) is switched off so that ejections follow the config alone."""
    out = outlier_detection_pb2.OutlierDetection(
        interval=duration(od.interval),
        base_ejection_time=duration(od.base_ejection_time),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=od.max_ejection_percent),
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
    )
    if od.consecutive_5xx is not None:
        out.consecutive_5xx.value = od.consecutive_5xx
    else:  # Envoy's detector defaults to 5 and enforcing 100 %: turn it off explicitly
        out.enforcing_consecutive_5xx.value = 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = 100  # Envoy's default is 0 (off)
    return out


def status_ranges(statuses: list[int]) -> list[range_pb2.Int64Range]:
    """``[200, 201, 202, 204]`` -> ``[200, 203), [204, 205)``: Envoy's half-open ranges."""
    ranges: list[range_pb2.Int64Range] = []
    for code in sorted(set(statuses)):
        if ranges and ranges[-1].end == code:
            ranges[-1].end = code + 1
        else:
            ranges.append(range_pb2.Int64Range(start=code, end=code + 1))
    return ranges


def health_check(hc: HealthCheck, service: Service) -> health_check_pb2.HealthCheck:
    return health_check_pb2.HealthCheck(
        timeout=duration(hc.timeout),
        interval=duration(hc.interval),
        # Envoy probes a cluster that has never had traffic only every 60 s; the operator's
        # interval should hold from the start, or a dead endpoint looks healthy for a minute.
        no_traffic_interval=duration(hc.interval),
        healthy_threshold=wrappers_pb2.UInt32Value(value=hc.healthy_threshold),
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=hc.unhealthy_threshold),
        http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(
            host=hc.host or service.name,
            path=hc.path,
            expected_statuses=status_ranges(hc.expected_statuses),
        ),
    )


def common_http_options(service: Service) -> protocol_pb2.HttpProtocolOptions | None:
    """Connection-pool settings, for the cluster's ``HttpProtocolOptions`` (which also holds
    the upstream protocol the spine sets: Envoy takes both in one message)."""
    pool = service.connection_pool
    if pool is None or (pool.idle_timeout is None and pool.max_requests_per_connection is None):
        return None
    out = protocol_pb2.HttpProtocolOptions()
    if pool.idle_timeout is not None:
        out.idle_timeout.CopyFrom(duration(pool.idle_timeout))
    if pool.max_requests_per_connection is not None:
        out.max_requests_per_connection.value = pool.max_requests_per_connection
    return out


def patch_cluster(service: Service, retried: frozenset[str], cluster: cluster_pb2.Cluster) -> None:
    """Set thresholds, outlier detection, health checks, the lb policy and pool settings."""
    cluster.lb_policy = LB_POLICIES[service.lb_policy]
    breakers = service.circuit_breakers
    needs_budget = breakers is None or (
        breakers.max_retries is None and breakers.retry_budget is None
    )
    cb = circuit_breakers(breakers, needs_budget and service.name in retried)
    if cb is not None:
        cluster.circuit_breakers.CopyFrom(cb)
    if service.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(outlier_detection(service.outlier_detection))
    if service.health_check is not None:
        cluster.health_checks.append(health_check(service.health_check, service))
    common = common_http_options(service)
    if common is not None:
        options = upstream_http_options(cluster, service)
        options.common_http_protocol_options.CopyFrom(common)
        set_upstream_http_options(cluster, options)


class Resilience(Feature):
    """Retries on routes; thresholds, outlier detection, health checks, load balancing and
    connection pools on clusters. No HTTP filter: Envoy's router and cluster manager do it."""

    name = "resilience"

    def patch_route_action(
        self, ctx: VirtualHostContext, route: Route, action: rc_pb2.RouteAction
    ) -> None:
        policy = effective_retries(route, ctx.config)
        if policy is not None and policy.active:
            action.retry_policy.CopyFrom(retry_policy(policy))

    def patch_cluster(
        self, ctx: CompileContext, service: Service, cluster: cluster_pb2.Cluster
    ) -> None:
        retried = ctx.memoized("resilience.retried", lambda: retried_services(ctx.config))
        patch_cluster(service, retried, cluster)
