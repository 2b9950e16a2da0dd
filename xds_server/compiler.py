"""Config + discovered endpoints -> Envoy resources: a pure function.

No I/O, no clock, no environment: the same input gives byte-identical resources (deterministic
serialisation) and so the same versions on every control-plane replica. One function per Envoy
resource kind keeps each feature's compilation in one obvious place; later features add fields
here and a golden test in ``tests/golden``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from meshgate.config import (
    Endpoint,
    GatewayConfig,
    HeaderMatch,
    Listener,
    Route,
    RouteMatch,
    Service,
    VirtualHost,
    route_name,
)

from .snapshot import Resource, Snapshot

#: Fields of every access-log line (Envoy substitution formatter, JSON typed output).
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "listener": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "route": "%ROUTE_NAME%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
}

#: Local replies that Envoy generates itself (response flag set) get a JSON body; the message
#: for "no route" is ours because Envoy's body for it is empty. Direct-response routes carry no
#: response flag and keep the body the operator configured.
LOCAL_REPLY_MESSAGES: tuple[tuple[str, str], ...] = (
    ("NR", "no route matches this request"),
    ("NC", "the route's upstream service is not configured"),
    ("UH", "no healthy upstream endpoint for this route"),
    ("UT", "the upstream did not answer within the route timeout"),
)

_ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(),
    resource_api_version=config_source_pb2.V3,
)


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _duration(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def _struct(fields: Mapping[str, str]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(fields))
    return s


def _json_format(fields: Mapping[str, str]) -> sfs_pb2.SubstitutionFormatString:
    return sfs_pb2.SubstitutionFormatString(
        json_format=_struct(fields), content_type="application/json"
    )


def _local_reply_config() -> hcm_pb2.LocalReplyConfig:
    envelope = {
        "error": "%RESPONSE_CODE_DETAILS%",
        "message": "%LOCAL_REPLY_BODY%",
        "request_id": "%REQ(X-REQUEST-ID)%",
    }
    mappers = [
        hcm_pb2.ResponseMapper(
            filter=accesslog_pb2.AccessLogFilter(
                response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=[flag])
            ),
            body_format_override=_json_format({**envelope, "message": message}),
        )
        for flag, message in LOCAL_REPLY_MESSAGES
    ]
    # Any other Envoy-generated reply (reset, overflow, protocol error...): Envoy's own text.
    mappers.append(
        hcm_pb2.ResponseMapper(
            filter=accesslog_pb2.AccessLogFilter(
                response_flag_filter=accesslog_pb2.ResponseFlagFilter()
            ),
            body_format_override=_json_format(envelope),
        )
    )
    return hcm_pb2.LocalReplyConfig(mappers=mappers)


def _access_log() -> accesslog_pb2.AccessLog:
    return accesslog_pb2.AccessLog(
        name="envoy.access_loggers.stdout",
        typed_config=_any(
            stream_pb2.StdoutAccessLog(
                log_format=sfs_pb2.SubstitutionFormatString(json_format=_struct(ACCESS_LOG_FORMAT))
            )
        ),
    )


def compile_listener(listener: Listener) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=listener.name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(route_config_name=listener.name, config_source=_ADS),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
            )
        ],
        access_log=[_access_log()],
        local_reply_config=_local_reply_config(),
        always_set_request_id_in_response=True,
        preserve_external_request_id=listener.request_id == "preserve_or_generate",
        # Edge defaults: the client address is the peer (not a spoofable XFF), paths are
        # normalised before matching so /a/../b cannot sneak past a route.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
    )
    return listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=listener.address, port_value=listener.port
            )
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_any(hcm),
                    )
                ]
            )
        ],
    )


def _string_match(
    exact: str | None, prefix: str | None, regex: str | None
) -> string_pb2.StringMatcher:
    if exact is not None:
        return string_pb2.StringMatcher(exact=exact)
    if prefix is not None:
        return string_pb2.StringMatcher(prefix=prefix)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex or ""))


def _header_matcher(h: HeaderMatch) -> rc_pb2.HeaderMatcher:
    if h.present is not None:
        return rc_pb2.HeaderMatcher(name=h.name, present_match=h.present, invert_match=h.invert)
    return rc_pb2.HeaderMatcher(
        name=h.name, string_match=_string_match(h.exact, h.prefix, h.regex), invert_match=h.invert
    )


def compile_match(match: RouteMatch) -> rc_pb2.RouteMatch:
    rm = rc_pb2.RouteMatch(
        case_sensitive=wrappers_pb2.BoolValue(value=match.case_sensitive),
        headers=[_header_matcher(h) for h in match.headers],
    )
    if match.prefix is not None:
        rm.prefix = match.prefix
    elif match.path is not None:
        rm.path = match.path
    else:
        rm.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match.regex or ""))
    if match.methods:
        methods = sorted(set(match.methods))
        if len(methods) == 1:
            matcher = string_pb2.StringMatcher(exact=methods[0])
        else:
            matcher = string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=f"^({'|'.join(methods)})$")
            )
        rm.headers.insert(0, rc_pb2.HeaderMatcher(name=":method", string_match=matcher))
    return rm


def compile_route(vhost: VirtualHost, index: int, route: Route) -> rc_pb2.Route:
    out = rc_pb2.Route(name=route_name(vhost, index, route), match=compile_match(route.match))
    if route.direct_response is not None:
        dr = route.direct_response
        out.direct_response.CopyFrom(
            rc_pb2.DirectResponseAction(
                status=dr.status, body=base_pb2.DataSource(inline_string=dr.body)
            )
        )
        out.response_headers_to_add.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value=dr.content_type),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
        return out
    action = rc_pb2.RouteAction(cluster=route.service or "")
    if route.timeout is not None:
        action.timeout.CopyFrom(_duration(route.timeout))
    out.route.CopyFrom(action)
    return out


def compile_route_configuration(listener: Listener) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=listener.name,
        virtual_hosts=[
            rc_pb2.VirtualHost(
                name=vh.name,
                domains=vh.domains,
                routes=[compile_route(vh, i, r) for i, r in enumerate(vh.routes)],
            )
            for vh in listener.virtual_hosts
        ],
    )


def compile_cluster(service: Service) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=service.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ADS),
        connect_timeout=_duration(service.connect_timeout),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    if service.protocol == "http2":
        opts = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(_any(opts))
    return cluster


def compile_load_assignment(
    service: Service, discovered: Sequence[Endpoint] = ()
) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = []
    for ep in [*service.endpoints, *discovered]:
        lbe = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=ep.address, port_value=ep.port)
                )
            )
        )
        if ep.weight is not None:
            lbe.load_balancing_weight.value = ep.weight
        lb_endpoints.append(lbe)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=service.name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
    )


def compile_resources(
    config: GatewayConfig, discovered: Mapping[str, Sequence[Endpoint]] | None = None
) -> list[Resource]:
    """Every Envoy resource the config means, packed and versioned."""
    discovered = discovered or {}
    out: list[Resource] = []
    for service in config.services:
        out.append(Resource.of(service.name, compile_cluster(service)))
        out.append(
            Resource.of(
                service.name,
                compile_load_assignment(service, discovered.get(service.name, ())),
            )
        )
    for listener in config.listeners:
        out.append(Resource.of(listener.name, compile_listener(listener)))
        out.append(Resource.of(listener.name, compile_route_configuration(listener)))
    return out


def compile_snapshot(
    config: GatewayConfig,
    discovered: Mapping[str, Sequence[Endpoint]] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Snapshot:
    """Compile and check: raises InconsistentSnapshotError rather than return a broken set."""
    return Snapshot.build(compile_resources(config, discovered), labels).check()
