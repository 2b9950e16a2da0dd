"""The compiler feature seam: what a feature may add to the resources the spine builds.

The spine (``listeners.py``, ``routes.py``, ``clusters.py``) builds the resources every config
needs; a *feature* (``features/<name>.py``) adds one capability to them through the hooks of
:class:`Feature`, and the spine calls each hook of every registered feature at one fixed
point. A feature overrides only the hooks it needs; :class:`Features` finds those once per
compile, so a hook no feature implements costs nothing per route. Envoy Gateway's
``internal/xds/translator`` ``httpFilter`` (``patchHCM``, ``patchRoute``, ``patchResources``)
is the model.

Rules every feature keeps:

* HTTP filters come from :meth:`Feature.http_filters`, named in :attr:`Feature.http_filter_names`,
  and each name has a row in ``filters.py``'s order table, which alone decides where a filter
  goes (checked when :class:`Features` is built, and again for every filter emitted).
* A route that uses no feature pays for no filter: a filter goes into a listener's chain only
  when some route of that listener needs it, and when not every route does, it goes in
  *disabled* and the routes that use it switch it on with ``typed_per_filter_config``.
* Features are stateless: whatever a feature computes for a compile goes into the context's
  memo (``ctx.compile.memoized`` for the whole config, ``ctx.memoized`` per listener).
* Hooks of different features may run in any registration order without changing the result;
  where two features append to the same repeated field, the order of ``FEATURES`` in
  ``features/__init__.py`` is the order of the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.config import Route, Service
from xds_server.compiler.context import CompileContext, ListenerContext, VirtualHostContext
from xds_server.compiler.filters import check_declared
from xds_server.snapshot.snapshot import Resource

#: The hooks the spine calls, in the order it calls them for one compile.
HOOKS: tuple[str, ...] = (
    "patch_cluster",
    "http_filters",
    "patch_hcm",
    "patch_listener",
    "patch_route_action",
    "patch_route",
    "expand_route",
    "patch_vhost",
    "extra_resources",
)


class FeatureError(ValueError):
    """A feature breaks a rule of the seam (a programming error, found at compile time)."""


class Feature:
    """One capability of the compiler. Every hook is a no-op here; override what you need.

    Hooks receive the context first, then the config object being compiled (if any), then the
    Envoy message to patch in place.
    """

    #: Short name, used in memo keys and error messages ("cors", "resilience").
    name: ClassVar[str] = ""
    #: Every HTTP filter name this feature may add; each must have a row in ``filters.py``.
    http_filter_names: ClassVar[tuple[str, ...]] = ()

    # --- listener ---------------------------------------------------------------------------

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        """HTTP filters this listener needs from the feature (the order table places them);
        empty when no route of the listener uses the feature."""
        return []

    def patch_hcm(self, ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
        """HTTP connection manager settings (timeouts, limits, headers)."""

    def patch_listener(self, ctx: ListenerContext, listener: listener_pb2.Listener) -> None:
        """Listener settings and network filters (after the HCM is packed into it)."""

    # --- routes -----------------------------------------------------------------------------

    def patch_route_action(
        self, ctx: VirtualHostContext, route: Route, action: rc_pb2.RouteAction
    ) -> None:
        """The route action of a proxied route (not called for direct responses): its target
        beyond one service, rewrites, retries, hashing, upgrades."""

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        """The compiled route (action already set): header mutations, per-filter configs."""

    def expand_route(
        self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route
    ) -> list[rc_pb2.Route]:
        """The Envoy routes ``out`` becomes, in match order (usually just ``[out]``)."""
        return [out]

    def patch_vhost(self, ctx: VirtualHostContext, out: rc_pb2.VirtualHost) -> None:
        """The compiled virtual host ``ctx.vhost`` (its routes already in ``out``)."""

    # --- clusters and resources of its own --------------------------------------------------

    def patch_cluster(
        self, ctx: CompileContext, service: Service, cluster: cluster_pb2.Cluster
    ) -> None:
        """The cluster of one service."""

    def extra_resources(self, ctx: CompileContext) -> list[Resource]:
        """Resources the feature needs besides the config's own: clusters of the services it
        calls (ext_authz, a JWKS host), secrets. Referenced names must resolve in the
        snapshot; the reference walker checks that before anything is published."""
        return []


@dataclass(frozen=True)
class Features:
    """The registered features and, per hook, those that implement it (in registration order)."""

    all: tuple[Feature, ...]
    patch_cluster: tuple[Feature, ...]
    http_filters: tuple[Feature, ...]
    patch_hcm: tuple[Feature, ...]
    patch_listener: tuple[Feature, ...]
    patch_route_action: tuple[Feature, ...]
    patch_route: tuple[Feature, ...]
    expand_route: tuple[Feature, ...]
    patch_vhost: tuple[Feature, ...]
    extra_resources: tuple[Feature, ...]

    @classmethod
    def of(cls, features: Sequence[Feature]) -> Features:
        """Check the seam's rules for ``features`` and index their hooks."""
        names = [f.name for f in features]
        for feature in features:
            if not feature.name:
                raise FeatureError(f"{type(feature).__name__} has no name")
            if names.count(feature.name) > 1:
                raise FeatureError(f"two features are named {feature.name!r}")
            if feature.http_filter_names and not _overrides(feature, "http_filters"):
                raise FeatureError(f"feature {feature.name!r} declares HTTP filters but adds none")
        check_declared([(f.name, f.http_filter_names) for f in features])
        hooks = {hook: tuple(f for f in features if _overrides(f, hook)) for hook in HOOKS}
        return cls(all=tuple(features), **hooks)


def _overrides(feature: Feature, hook: str) -> bool:
    return getattr(type(feature), hook) is not getattr(Feature, hook)
