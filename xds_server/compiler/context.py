"""What a compile function may look at besides the object it compiles.

One :class:`CompileContext` is created per compile: the config, the discovered endpoints, the
features taking part, and a memo for whole-config facts ("which services does some route
retry?") that several resources need. Listeners and virtual hosts get *views* of it
(:class:`ListenerContext`, :class:`VirtualHostContext`) that add the object being compiled and
a per-listener memo ("does any route of this listener use compression?"), so that per-route
code stays O(1) and compiling stays linear in the number of routes.

Everything a compile reads arrives through these objects: there are no module-level caches or
singletons in the compiler, so two compiles (of two configs, or on two threads) can never see
each other's state, and a memo lives exactly as long as its compile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from meshgate.config import Endpoint, GatewayConfig, Listener, Service, VirtualHost

if TYPE_CHECKING:
    from xds_server.compiler.feature import Features

T = TypeVar("T")


def _memoized(memo: dict[str, Any], key: str, compute: Callable[[], T]) -> T:
    if key not in memo:
        memo[key] = compute()
    value: T = memo[key]
    return value


@dataclass(frozen=True)
class IssuerKeys:
    """An issuer's signing keys as the control plane last fetched them (its JWKS manager).

    ``fingerprint`` is :meth:`meshgate.config.identity.Jwks.fingerprint` of the source they
    were fetched from: keys fetched for another URL (the config changed) are not used.
    """

    fingerprint: str
    #: The JWKS JSON document, validated by the manager.
    document: str


@dataclass(frozen=True)
class CompileContext:
    """One compile: its input, its features and its memo."""

    config: GatewayConfig
    #: Endpoints found by discovery sources, by service name (added to the configured ones).
    discovered: Mapping[str, Sequence[Endpoint]]
    #: The features taking part, with the hooks each implements (see ``feature.py``).
    features: Features
    #: Fetched signing keys by issuer name (inline keys are in the config itself). An issuer
    #: missing here has no usable keys: its tokens are refused, never accepted unchecked.
    jwks: Mapping[str, IssuerKeys] = field(default_factory=dict)
    #: Secret values by :meth:`meshgate.config.identity.SecretRef.key`, read by the compile
    #: job from the environment or files; they go to Envoy only as SDS secrets.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Whole-config facts computed once per compile; keys are prefixed by the feature's name.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def memoized(self, key: str, compute: Callable[[], T]) -> T:
        return _memoized(self.memo, key, compute)

    def service(self, name: str) -> Service:
        svc = self.config.service(name)
        if svc is None:  # reference_errors() rules this out before compilation
            raise KeyError(f"unknown service {name!r}")
        return svc

    def endpoints(self, service: str) -> Sequence[Endpoint]:
        """Discovered endpoints of ``service`` (its configured ones are on the model)."""
        return self.discovered.get(service, ())

    def for_listener(self, listener: Listener) -> ListenerContext:
        return ListenerContext(self, listener, self.config, self.features)


@dataclass(frozen=True)
class ListenerContext:
    """One listener of one compile."""

    compile: CompileContext
    listener: Listener
    #: ``compile.config`` and ``compile.features``, as plain attributes: per-route code reads
    #: them for each of 10,000 routes.
    config: GatewayConfig
    features: Features
    #: Facts about the whole listener, shared by the views of its virtual hosts.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)

    def memoized(self, key: str, compute: Callable[[], T]) -> T:
        """Per-listener memo (use ``ctx.compile.memoized`` for whole-config facts)."""
        return _memoized(self.memo, key, compute)

    def service(self, name: str) -> Service:
        return self.compile.service(name)

    def for_vhost(self, vhost: VirtualHost) -> VirtualHostContext:
        return VirtualHostContext(
            self.compile, self.listener, self.config, self.features, vhost, memo=self.memo
        )


@dataclass(frozen=True)
class VirtualHostContext(ListenerContext):
    """One virtual host of one listener: what a route's compilation may look at."""

    vhost: VirtualHost
