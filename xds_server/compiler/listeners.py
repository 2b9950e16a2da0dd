"""Spine: listeners with their HTTP connection manager, JSON access logs and local replies.

Features add HTTP filters (placed by ``filters.py``'s order table), HCM settings and listener
settings through their hooks; this module knows none of them by name.
"""

from __future__ import annotations

import ipaddress

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from meshgate.config.values import address_key
from xds_server.compiler.context import ListenerContext
from xds_server.compiler.filters import http_filter_chain
from xds_server.compiler.identity_names import (
    ALLOW_RBAC_PREFIX,
    DENY_RBAC_PREFIX,
    POLICY_METADATA,
    RBAC_METADATA,
)
from xds_server.compiler.protos import ADS, json_format_string, pack, struct

#: Fields of every access-log line (Envoy substitution formatter, JSON typed output).
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    # The path as the client sent it (before rewrites), without the query string: queries
    # carry credentials (?access_token=, signed URLs) that must never reach a log.
    "path": "%PATH(NQ:ORIG_OR_PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "listener": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "route": "%ROUTE_NAME%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    # Set by a split's ClusterWeight before the request goes upstream; the router adds it to
    # the downstream request headers, which are what the access log reads.
    "variant": "%REQ(X-MESHGATE-VARIANT)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    # The client address as the listener's client_address settles it (the address IP rules
    # judge), and the socket peer it came through (a trusted proxy, or the client itself).
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "peer": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
    # The route's access policy and its mode (enforce, shadow, unavailable), and what the
    # policy's rules in shadow would have decided (docs/security.md, "Dry run"): "denied" in
    # shadow_deny names the deny rule (shadow_deny_rule); "denied" in shadow_allow means no
    # grant would have let the request through, "allowed" names the grant (shadow_grant).
    "policy": f"%METADATA(ROUTE:{POLICY_METADATA}:policy)%",
    "policy_mode": f"%METADATA(ROUTE:{POLICY_METADATA}:mode)%",
    "shadow_deny": f"%DYNAMIC_METADATA({RBAC_METADATA}:{DENY_RBAC_PREFIX}shadow_engine_result)%",
    "shadow_deny_rule": (
        f"%DYNAMIC_METADATA({RBAC_METADATA}:{DENY_RBAC_PREFIX}shadow_effective_policy_id)%"
    ),
    "shadow_allow": (
        f"%DYNAMIC_METADATA({RBAC_METADATA}:{ALLOW_RBAC_PREFIX}shadow_engine_result)%"
    ),
    "shadow_grant": (
        f"%DYNAMIC_METADATA({RBAC_METADATA}:{ALLOW_RBAC_PREFIX}shadow_effective_policy_id)%"
    ),
}

#: Local replies that Envoy generates itself (response flag set) get a JSON body; the message
#: for "no route" is ours because Envoy's body for it is empty. Direct-response routes carry no
#: response flag and keep the body the operator configured.
LOCAL_REPLY_MESSAGES: tuple[tuple[str, str], ...] = (
    ("NR", "no route matches this request"),
    ("NC", "the route's upstream service is not configured"),
    ("UH", "no healthy upstream endpoint for this route"),
    ("UT", "the upstream did not answer within the route timeout"),
    ("UO", "circuit breaker open: too many concurrent requests to this service"),
)

#: Local replies Envoy generates without a response flag, recognised by their exact response
#: code details (CEL access-log filter). Direct-response routes have the details
#: "direct_response", so a route that answers 413 on purpose keeps its own body.
LOCAL_REPLY_DETAILS: tuple[tuple[str, str], ...] = (
    ("request_payload_too_large", "the request body is larger than this route accepts"),
    ("http1.headers_too_large", "the request headers are larger than this listener accepts"),
    ("http1.unexpected_underscore", "header names with underscores are not accepted here"),
    ("overload", "the gateway is overloaded; retry later"),
)


def details_filter(details: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=pack(
                cel_pb2.ExpressionFilter(expression=f"response.code_details == '{details}'")
            ),
        )
    )


def local_reply_config() -> hcm_pb2.LocalReplyConfig:
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
            body_format_override=json_format_string({**envelope, "message": message}),
        )
        for flag, message in LOCAL_REPLY_MESSAGES
    ]
    mappers += [
        hcm_pb2.ResponseMapper(
            filter=details_filter(details),
            body_format_override=json_format_string({**envelope, "message": message}),
        )
        for details, message in LOCAL_REPLY_DETAILS
    ]
    # Any other Envoy-generated reply (reset, overflow, protocol error...): Envoy's own text.
    mappers.append(
        hcm_pb2.ResponseMapper(
            filter=accesslog_pb2.AccessLogFilter(
                response_flag_filter=accesslog_pb2.ResponseFlagFilter()
            ),
            body_format_override=json_format_string(envelope),
        )
    )
    return hcm_pb2.LocalReplyConfig(mappers=mappers)


def access_log() -> accesslog_pb2.AccessLog:
    return accesslog_pb2.AccessLog(
        name="envoy.access_loggers.stdout",
        typed_config=pack(
            stream_pb2.StdoutAccessLog(
                log_format=sfs_pb2.SubstitutionFormatString(json_format=struct(ACCESS_LOG_FORMAT))
            )
        ),
    )


def dual_stack(ctx: ListenerContext) -> bool:
    """Whether the listener binds ``::`` for IPv4 clients too.

    ``::`` means every address, as for other servers on the host; Envoy binds it IPv6-only
    unless told otherwise, refusing IPv4 clients. IPv4 clients of a dual-stack socket appear
    as ``::ffff:a.b.c.d``, which every CIDR list of the compiler matches as well
    (``protos.cidr_ranges``). A config that also binds an IPv4 address on the same port (the
    way to serve both before) keeps ``::`` IPv6-only, or the two sockets would collide.
    """
    listener = ctx.listener
    if address_key(listener.address) != "::":
        return False
    return not any(
        other.port == listener.port and ipaddress.ip_address(other.address).version == 4
        for other in ctx.config.listeners
    )


def compile_listener(ctx: ListenerContext) -> listener_pb2.Listener:
    listener = ctx.listener
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=listener.name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(route_config_name=listener.name, config_source=ADS),
        http_filters=http_filter_chain(ctx),
        access_log=[access_log()],
        local_reply_config=local_reply_config(),
        always_set_request_id_in_response=True,
        preserve_external_request_id=listener.request_id == "preserve_or_generate",
        # Edge defaults: the client address is the peer (not a spoofable XFF; trusted proxies
        # are the client_address feature's), paths are normalised before matching so
        # /a/../b cannot sneak past a route.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
    )
    for feature in ctx.features.patch_hcm:
        feature.patch_hcm(ctx, hcm)
    out = listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=listener.address,
                port_value=listener.port,
                ipv4_compat=dual_stack(ctx),
            )
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=pack(hcm),
                    )
                ]
            )
        ],
    )
    for feature in ctx.features.patch_listener:
        feature.patch_listener(ctx, out)
    return out
