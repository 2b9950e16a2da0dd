"""A candidate snapshot as one static bootstrap, for ``envoy --mode validate``.

Validate mode has no management server, so everything the snapshot delivers over ADS is
inlined where Envoy would have asked for it, keeping what Envoy checks the same:

* an EDS cluster becomes STATIC with its endpoints;
* an HTTP connection manager's RDS subscription becomes its route configuration;
* a filter whose config comes over ECDS (``config_discovery``) gets that config as its
  ``typed_config`` (Envoy applies the same checks to both: the type must be one of the
  filter's ``type_urls``, which is checked here too, since validate mode cannot);
* secrets go to ``static_resources.secrets`` and every ``SdsSecretConfig`` over ADS loses its
  ``sds_config``, which makes it name a static secret: the same lookup by name, the same
  checks of the secret.

Which endpoints, route configuration, filter config or secret belongs where is what the
snapshot's reference walker says (``snapshot.references``), the answer the consistency check
and the ADS planner use. The bootstrap holds secret values: it is written only into a
private directory and deleted after the run (:class:`~xds_server.publish.validation.
ValidateModeValidator`).
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from xds_server.snapshot.snapshot import (
    CLUSTER,
    ENDPOINT,
    EXTENSION_CONFIG,
    LISTENER,
    ROUTE,
    SECRET,
    InconsistentSnapshotError,
    Resource,
    Snapshot,
)
from xds_server.snapshot.walker import ECDS_HOLDERS

_SDS = "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig"


def static_bootstrap(snapshot: Snapshot) -> dict[str, object]:
    """A bootstrap with the snapshot inlined (see the module's docstring)."""
    refs = snapshot.references
    endpoints, routes = snapshot.of_type(ENDPOINT), snapshot.of_type(ROUTE)
    inliner = (
        _Inliner(snapshot)
        if snapshot.of_type(SECRET) or snapshot.of_type(EXTENSION_CONFIG)
        else None
    )
    clusters = []
    for name, res in snapshot.of_type(CLUSTER).items():
        cluster = res.unpack()
        assert isinstance(cluster, cluster_pb2.Cluster)
        eds = [r.name for r in refs.of(CLUSTER, name) if r.type_url == ENDPOINT]
        if eds:
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cla_res = endpoints.get(eds[0])
            if cla_res is not None:
                cla = cla_res.unpack()
                assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
                cluster.load_assignment.CopyFrom(cla)
        if inliner is not None:
            inliner.rewrite(cluster)
        clusters.append(json_format.MessageToDict(cluster))
    listeners = []
    for name, res in snapshot.of_type(LISTENER).items():
        listener = res.unpack()
        assert isinstance(listener, listener_pb2.Listener)
        if inliner is not None:
            inliner.rewrite(listener)
        _inline_routes(listener, refs.children(ROUTE).get(name, frozenset()), routes, inliner)
        listener.bind_to_port.value = False
        listeners.append(json_format.MessageToDict(listener))
    static: dict[str, object] = {"clusters": clusters, "listeners": listeners}
    secrets = [json_format.MessageToDict(r.unpack()) for r in snapshot.of_type(SECRET).values()]
    if secrets:
        static["secrets"] = secrets
    return {"static_resources": static}


def _inline_routes(
    listener: listener_pb2.Listener,
    asked: frozenset[str],
    routes: Mapping[str, Resource],
    inliner: _Inliner | None,
) -> None:
    """Replace each HCM's RDS subscription to one of ``asked`` by the route configuration."""
    for chain in [*listener.filter_chains, listener.default_filter_chain]:
        for flt in chain.filters:
            if not flt.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            flt.typed_config.Unpack(hcm)
            name = hcm.rds.route_config_name
            if hcm.HasField("rds") and name in asked and name in routes:
                rc = routes[name].unpack()
                assert isinstance(rc, route_pb2.RouteConfiguration)
                if inliner is not None:
                    inliner.rewrite(rc)
                hcm.route_config.CopyFrom(rc)  # a oneof with rds: replaces it
                flt.typed_config.Pack(hcm, deterministic=True)


class _Inliner:
    """Rewrites messages in place: ECDS configs inlined, SDS references made static.

    Walks every field, unpacking typed configs of types the descriptor pool knows (the
    compiler imports every type it emits) and packing them again only when they changed.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._configs: dict[str, extension_pb2.TypedExtensionConfig] = {}
        for name, res in snapshot.of_type(EXTENSION_CONFIG).items():
            config = res.unpack()
            assert isinstance(config, extension_pb2.TypedExtensionConfig)
            self._configs[name] = config
        self._pool = descriptor_pool.Default()
        for config in self._configs.values():
            self.rewrite(config)

    def rewrite(self, msg: Message) -> bool:
        """Rewrite ``msg`` in place; whether anything changed."""
        full = msg.DESCRIPTOR.full_name
        changed = False
        if full == _SDS:
            if msg.sds_config.HasField("ads"):  # type: ignore[attr-defined]
                msg.ClearField("sds_config")
                return True
            return False
        if full in ECDS_HOLDERS and msg.HasField("config_discovery"):
            changed = self._inline_config(msg)
        for field, value in msg.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                items = (
                    list(value.values())
                    if field.message_type.fields_by_name["value"].message_type
                    else []
                )
            elif field.is_repeated:
                items = list(value)
            else:
                items = [value]
            for item in items:
                if isinstance(item, any_pb2.Any):
                    changed |= self._rewrite_any(item)
                else:
                    changed |= self.rewrite(item)
        return changed

    def _inline_config(self, msg: Message) -> bool:
        source = msg.config_discovery  # type: ignore[attr-defined]
        name = msg.name  # type: ignore[attr-defined]
        if not source.config_source.HasField("ads"):
            return False
        config = self._configs.get(name)
        if config is None:  # the consistency check rules this out before validation
            raise InconsistentSnapshotError(f"filter {name!r} asks for a missing filter config")
        allowed = list(source.type_urls)
        if allowed and config.typed_config.type_url not in allowed:
            raise InconsistentSnapshotError(
                f"filter {name!r}: its config over ECDS is a {config.typed_config.type_url}, "
                f"not one of {allowed}"
            )
        msg.ClearField("config_discovery")
        msg.typed_config.CopyFrom(config.typed_config)  # type: ignore[attr-defined]
        return True

    def _rewrite_any(self, packed: any_pb2.Any) -> bool:
        type_name = packed.type_url.rsplit("/", 1)[-1]
        try:
            desc = self._pool.FindMessageTypeByName(type_name)
        except KeyError:
            return False
        inner = message_factory.GetMessageClass(desc)()
        packed.Unpack(inner)
        if not self.rewrite(inner):
            return False
        packed.Pack(inner, deterministic=True)
        return True
