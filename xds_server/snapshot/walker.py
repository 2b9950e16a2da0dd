"""How one resource is walked for the names of other resources it references.

A cluster name is recognised by the message that carries it, never by filter name. So are a
secret (``SdsSecretConfig`` over ADS, wherever it sits) and a filter config delivered over ECDS
(an ``HttpFilter``, network or listener filter with ``config_discovery`` over ADS: its name is
the ``TypedExtensionConfig`` Envoy asks for). Envoy's API
names a cluster for a side call through ``GrpcService.EnvoyGrpc.cluster_name`` or
``HttpUri.cluster`` (ext_authz, ext_proc, ratelimit, rate_limit_quota, jwt_authn's JWKS,
oauth2's token endpoint, OpenTelemetry traces and access logs, remote data sources...), and in
a few plain string fields listed in :data:`CLUSTER_FIELDS`. Every typed config
(``google.protobuf.Any``) whose type is in the protobuf descriptor pool is unpacked and walked,
so a filter added later is covered without a line here. Deliberately not walked:
``ConfigSource`` (it names the management server, which lives in Envoy's bootstrap and never in
a snapshot), and typed configs of types the pool does not know (the compiler imports every type
it emits, so none of ours).

Walking is the costly part at 10,000 routes, so routes take a direct path (their targets,
mirrors and per-filter configs) instead of the generic descent, identical typed configs are
walked once per walk, and a message type that cannot contain a reference is never descended.
A :class:`Walker` lives for one walk; nothing is kept at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from xds_server.snapshot.type_urls import CLUSTER, ENDPOINT, EXTENSION_CONFIG, ROUTE, SECRET

#: Plain string fields that name a cluster, by the message that has them (besides
#: ``GrpcService.EnvoyGrpc`` and ``HttpUri``, which cover every side call). Fields that only
#: *match* a cluster (fault injection's ``upstream_cluster``) are not references.
CLUSTER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": ("cluster_name",),
    "envoy.config.core.v3.HttpUri": ("cluster",),
    "envoy.config.route.v3.RouteAction": ("cluster",),
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": ("cluster",),
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": ("name",),
    "envoy.config.trace.v3.ZipkinConfig": ("collector_cluster",),
    "envoy.config.trace.v3.DatadogConfig": ("collector_cluster",),
    "envoy.config.trace.v3.LightstepConfig": ("collector_cluster",),
    "envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig": ("cluster",),
    "envoy.extensions.tracers.fluentd.v3.FluentdConfig": ("cluster",),
    "envoy.extensions.clusters.aggregate.v3.ClusterConfig": ("clusters",),
    "envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig": ("cluster",),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": ("cluster",),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": (
        "name",
    ),
    "envoy.extensions.filters.udp.udp_proxy.v3.Route": ("cluster",),
    "envoy.extensions.router.cluster_specifiers.matcher.v3.ClusterAction": ("cluster",),
    "envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig": ("default_cluster",),
}

#: Messages that start a new "where" in error messages (``HTTP filter 'envoy.filters.http.
#: ext_authz'``), so a reference is reported by the filter that makes it, not by a long path.
LABELS: Mapping[str, str] = {
    "envoy.config.listener.v3.Filter": "network filter",
    "envoy.config.listener.v3.ListenerFilter": "listener filter",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": "HTTP filter",
    "envoy.config.accesslog.v3.AccessLog": "access log",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": (
        "tracing"
    ),
    "envoy.config.route.v3.VirtualHost": "virtual host",
}

#: Filters whose config may come over ECDS (``config_discovery``); the filter's ``name`` is
#: the name of the ``TypedExtensionConfig`` Envoy asks for.
ECDS_HOLDERS = frozenset(
    {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        "envoy.config.listener.v3.Filter",
        "envoy.config.listener.v3.ListenerFilter",
    }
)

_ANY = "google.protobuf.Any"
_CONFIG_SOURCE = "envoy.config.core.v3.ConfigSource"
_RDS = "envoy.extensions.filters.network.http_connection_manager.v3.Rds"
_ROUTE = "envoy.config.route.v3.Route"
#: Names a secret: in a filter config (oauth2's client and HMAC secrets) or a TLS context.
_SDS = "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig"
#: Message types the walker acts on; a type from which none is reachable is never descended.
_SITES = frozenset({_ANY, _RDS, _ROUTE, _SDS, *ECDS_HOLDERS, *CLUSTER_FIELDS})

Label = tuple[str, str]  # (kind, name): ("HTTP filter", "envoy.filters.http.ext_authz")
Path = tuple[str, ...]
#: (type_url, name) -> where it is first named: what one walk collects.
Found = dict[tuple[str, str], tuple[Label | None, Path]]
#: A reference found inside a typed config: (type_url, name, label or None, path within it).
Relative = tuple[str, str, Label | None, Path]


def via(label: Label | None, path: Path) -> str:
    where = ".".join(path)
    if label is None:
        return where or "the resource itself"
    kind, name = label
    head = f"{kind} {name!r}" if name else kind
    return f"{head} ({where})" if where else head


class Walker:
    """One walk's state: message classes, which types can hold a reference, and the
    references of each distinct typed config seen (a per-route config repeated on 10,000
    routes is unpacked once)."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        self._classes: dict[str, tuple[type[Message], Descriptor] | None] = {}
        self._can: dict[str, bool] = {}
        self._anys: dict[str, dict[bytes, list[Relative]]] = {}

    def unpack(self, packed: any_pb2.Any) -> Message | None:
        known = self._class(packed.type_url)
        if known is None:
            return None
        msg = known[0]()
        packed.Unpack(msg)
        return msg

    def resource(self, name: str, message: Message) -> Found:
        found: Found = {}
        if isinstance(message, cluster_pb2.Cluster):
            self._cluster(name, message, found)
        else:
            self._message(message, None, (), found)
        return found

    def _class(self, type_url: str) -> tuple[type[Message], Descriptor] | None:
        """The message class behind a type URL, and its descriptor; None for a type the
        descriptor pool does not know (its module was never imported)."""
        if type_url not in self._classes:
            try:
                desc = self._pool.FindMessageTypeByName(type_url.rsplit("/", 1)[-1])
            except KeyError:
                self._classes[type_url] = None
            else:
                self._classes[type_url] = (message_factory.GetMessageClass(desc), desc)
        return self._classes[type_url]

    def _cluster(self, name: str, cluster: cluster_pb2.Cluster, found: Found) -> None:
        if (
            cluster.type == cluster_pb2.Cluster.EDS
            and cluster.eds_cluster_config.eds_config.HasField("ads")
        ):
            eds = cluster.eds_cluster_config.service_name or name
            found[(ENDPOINT, eds)] = (None, ("eds_cluster_config",))
        if cluster.HasField("cluster_type"):
            self._message(cluster.cluster_type, None, ("cluster_type",), found)
        if cluster.HasField("transport_socket"):  # its TLS context may name secrets (SDS)
            self._message(cluster.transport_socket, None, ("transport_socket",), found)
        for i, match in enumerate(cluster.transport_socket_matches):
            self._message(match, None, (f"transport_socket_matches[{i}]",), found)

    def can_refer(self, desc: Descriptor) -> bool:
        """Whether a message of this type can contain a reference (a site, or a typed config
        that might), judged from the schema alone and remembered for the walk."""
        known = self._can.get(desc.full_name)
        if known is not None:
            return known
        seen = {desc.full_name}
        stack = [desc]
        while stack:
            d = stack.pop()
            if d.full_name in _SITES or self._can.get(d.full_name):
                self._can[desc.full_name] = True
                return True
            if d.full_name == _CONFIG_SOURCE:
                continue
            for field in d.fields:
                sub = field.message_type
                if sub is not None and sub.full_name not in seen:
                    if self._can.get(sub.full_name) is False:
                        continue
                    seen.add(sub.full_name)
                    stack.append(sub)
        for name in seen:  # nothing reachable from desc can refer, so nothing from these can
            self._can[name] = False
        return False

    def _message(self, msg: Message, label: Label | None, path: Path, found: Found) -> None:
        desc = msg.DESCRIPTOR
        full = desc.full_name
        if isinstance(msg, rc_pb2.Route):
            self._routes([msg], label, path, found, indexed=False)
            return
        if full == _CONFIG_SOURCE:
            return
        kind = LABELS.get(full)
        if kind is not None:
            name = getattr(msg, "name", "")
            if name or "name" not in desc.fields_by_name:
                label, path = (kind, name), ()
        if full == _RDS:
            rds_name = getattr(msg, "route_config_name", "")
            if rds_name and msg.config_source.HasField("ads"):  # type: ignore[attr-defined]
                found.setdefault((ROUTE, rds_name), (label, (*path, "route_config_name")))
            return
        if full == _SDS:
            # over ADS only: one without sds_config names a bootstrap secret, not ours
            secret = getattr(msg, "name", "")
            if secret and msg.sds_config.HasField("ads"):  # type: ignore[attr-defined]
                found.setdefault((SECRET, secret), (label, (*path, "name")))
            return
        if full in ECDS_HOLDERS and msg.HasField("config_discovery"):
            source = msg.config_discovery.config_source  # type: ignore[attr-defined]
            filter_name = getattr(msg, "name", "")
            if filter_name and source.HasField("ads"):
                found.setdefault(
                    (EXTENSION_CONFIG, filter_name), (label, (*path, "config_discovery"))
                )
        for field_name in CLUSTER_FIELDS.get(full, ()):
            value = getattr(msg, field_name)
            if isinstance(value, str):
                if value:
                    found.setdefault((CLUSTER, value), (label, (*path, field_name)))
            else:
                for i, item in enumerate(value):
                    if item:
                        found.setdefault((CLUSTER, item), (label, (*path, f"{field_name}[{i}]")))
        for field, value in msg.ListFields():
            sub = field.message_type
            if sub is None or not self.can_refer(sub):
                continue
            if sub.GetOptions().map_entry:
                for key in sorted(value):
                    self._child(value[key], label, (*path, f"{field.name}[{key}]"), found)
            elif field.is_repeated:
                if sub.full_name == _ROUTE:
                    self._routes(value, label, path, found)
                else:
                    for i, item in enumerate(value):
                        self._child(item, label, (*path, f"{field.name}[{i}]"), found)
            elif sub.full_name == _ANY:
                self._any(value, label, path, found)  # "typed_config" says nothing: omitted
            else:
                self._message(value, label, (*path, field.name), found)

    def _child(self, msg: Message, label: Label | None, path: Path, found: Found) -> None:
        if isinstance(msg, any_pb2.Any):
            self._any(msg, label, path, found)
        else:
            self._message(msg, label, path, found)

    def _any(self, packed: any_pb2.Any, label: Label | None, path: Path, found: Found) -> None:
        inner = self._any_refs(packed)
        if inner:
            _compose(inner, label, path, found)

    def _any_refs(self, packed: any_pb2.Any) -> list[Relative]:
        """What a typed config references, relative to itself; walked once per distinct
        config (type and bytes) in this walk."""
        type_url = packed.type_url
        if not type_url:
            return []
        by_value = self._anys.get(type_url)
        if by_value is None:
            by_value = self._anys[type_url] = {}
        value = packed.value
        inner = by_value.get(value)
        if inner is None:
            inner = []
            known = self._class(type_url)
            if known is not None and self.can_refer(known[1]):
                msg = known[0]()
                msg.ParseFromString(value)
                sub: Found = {}
                self._message(msg, None, (), sub)
                inner = [(t, n, lbl, p) for (t, n), (lbl, p) in sub.items()]
            by_value[value] = inner
        return inner

    def _routes(
        self,
        routes: Iterable[rc_pb2.Route],
        label: Label | None,
        path: Path,
        found: Found,
        indexed: bool = True,
    ) -> None:
        """Each route's targets, mirrors and per-filter configs: the direct path for what a
        route configuration has thousands of (the generic descent costs several times more
        per route). Other route fields name no cluster in Envoy's API."""
        targets: set[str] = set()  # clusters already found, without building a key per route
        for i, route in enumerate(routes):
            name = route.name
            where = () if name else (*path, f"routes[{i}]") if indexed else path
            if route.HasField("route"):
                action = route.route
                cluster = action.cluster
                if cluster:
                    if cluster not in targets:
                        targets.add(cluster)
                        at = ("route", name) if name else label
                        found.setdefault((CLUSTER, cluster), (at, (*where, "route.cluster")))
                elif action.WhichOneof("cluster_specifier") not in (None, "cluster_header"):
                    # weighted clusters or a cluster specifier plugin: walked generically
                    at = ("route", name) if name else label
                    self._message(action, at, (*where, "route"), found)
                mirrors = action.request_mirror_policies
                if mirrors:
                    at = ("route", name) if name else label
                    for j, mirror in enumerate(mirrors):
                        if mirror.cluster:
                            field = f"route.request_mirror_policies[{j}].cluster"
                            found.setdefault((CLUSTER, mirror.cluster), (at, (*where, field)))
            configs = route.typed_per_filter_config
            if configs:
                at = ("route", name) if name else label
                for key, packed in sorted(configs.items()) if len(configs) > 1 else configs.items():
                    inner = self._any_refs(packed)
                    if inner:
                        _compose(inner, at, (*where, f"typed_per_filter_config[{key}]"), found)


def _compose(
    inner: list[Relative],
    label: Label | None,
    path: Path,
    found: Found,
) -> None:
    """Add a typed config's references, found relative to itself, at ``label``/``path``."""
    for type_url, name, inner_label, inner_path in inner:
        if inner_label is None:
            found.setdefault((type_url, name), (label, path + inner_path))
        else:
            found.setdefault((type_url, name), (inner_label, inner_path))
