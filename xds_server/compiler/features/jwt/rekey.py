"""New signing keys put into an already compiled snapshot, without the config: pure.

Keys change on the identity provider's schedule, not the config's. Normally a key change is
compiled like any input (the JWKS manager's view is ``ctx.jwks``). But while the config file
is rejected (a broken edit not yet fixed), no compile succeeds, and keys that must change (a
rotation, a withdrawn key, keys past ``max_stale``) would stay in Envoy as they are. So the
control plane re-keys the snapshot it published instead: only the providers' ``local_jwks``
in the jwt_authn ECDS resource change, built by the very functions a compile uses
(:mod:`~xds_server.compiler.features.jwt.keys`). The result is byte for byte what compiling
the published config with these keys gives (same resource, same snapshot version), so a
later compile of that config with the same keys publishes nothing new, and whichever of the
two runs last with the newest keys wins; neither can bring back older ones.

Which providers: those of the issuers the published config fetches keys for (URL and file
sources, as the compile job reported them), each only with keys fetched for that very source
(its fingerprint). Inline keys are the config's and stay as compiled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

from xds_server.compiler.context import IssuerKeys
from xds_server.compiler.extension_configs import extension_config_resource
from xds_server.compiler.features.jwt.keys import fetched_keys, jwks_text, usable_or_no_key
from xds_server.compiler.identity_names import JWT_FILTER, provider_name
from xds_server.snapshot.snapshot import EXTENSION_CONFIG, Snapshot


class KeySource(Protocol):
    """What re-keying needs to know of an issuer's key source (a ``JwksSource`` has it)."""

    @property
    def issuer(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def algorithms(self) -> Sequence[str]: ...


def rekeyed_config(
    config: jwt_pb2.JwtAuthentication,
    sources: Iterable[KeySource],
    fetched: Mapping[str, IssuerKeys],
) -> jwt_pb2.JwtAuthentication | None:
    """``config`` with each source's provider given the keys of ``fetched`` (or the key no
    token matches, when it has none); None when no provider changes."""
    out = jwt_pb2.JwtAuthentication()
    out.CopyFrom(config)
    changed = False
    for source in sources:
        name = provider_name(source.issuer)
        if name not in out.providers:
            continue
        keys = fetched_keys(source.issuer, source.fingerprint, fetched)
        text = jwks_text(usable_or_no_key(keys, source.algorithms))
        provider = out.providers[name]
        if provider.local_jwks.inline_string != text:
            provider.local_jwks.inline_string = text
            changed = True
    return out if changed else None


def rekeyed(
    snapshot: Snapshot, sources: Iterable[KeySource], fetched: Mapping[str, IssuerKeys]
) -> Snapshot:
    """``snapshot`` with ``fetched`` keys in its jwt_authn config; ``snapshot`` itself when
    they are the keys it has (or it has no jwt_authn config)."""
    resource = snapshot.of_type(EXTENSION_CONFIG).get(JWT_FILTER)
    if resource is None:
        return snapshot
    extension = resource.unpack()
    assert isinstance(extension, extension_pb2.TypedExtensionConfig)
    config = jwt_pb2.JwtAuthentication()
    if not extension.typed_config.Unpack(config):
        return snapshot  # not jwt_authn's config: nothing of ours to re-key
    new = rekeyed_config(config, sources, fetched)
    if new is None:
        return snapshot
    replacement = extension_config_resource(JWT_FILTER, new)
    return Snapshot.build(
        (
            replacement if r.type_url == EXTENSION_CONFIG and r.name == JWT_FILTER else r
            for by_name in snapshot.resources.values()
            for r in by_name.values()
        ),
        snapshot.labels,
    )
