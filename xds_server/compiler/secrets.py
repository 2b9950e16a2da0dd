"""Secrets for Envoy (SDS): how a feature hands Envoy a value it must never see in config.

A secret's value (an OAuth2 client secret, an HMAC key) is read by the compile job from the
environment or a file (:mod:`xds_server.worker.secret_values`) into ``ctx.secrets``, keyed by
:meth:`SecretRef.key() <meshgate.config.identity.SecretRef.key>`. A feature then

* adds the value as an SDS resource of its own: ``generic_secret_resource(name,
  secret_value(ctx, ref))`` from ``Feature.extra_resources``;
* names it in the filter config with ``sds_secret_config(name)``: Envoy asks for it over ADS
  and keeps the listener warming until it arrives.

The value then exists only in that ``Secret`` resource: never in a listener, a route or a log
line; ``meshgate render`` and ``/config_dump`` show it redacted (``GenericSecret.secret`` is
marked sensitive in Envoy's API). Because a secret is its own resource, rotating the value
changes only the SDS version: no listener is updated or drained.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from meshgate.config.identity import SecretRef
from xds_server.compiler.context import CompileContext
from xds_server.compiler.protos import ADS
from xds_server.snapshot.snapshot import Resource

__all__ = [
    "MissingSecretError",
    "generic_secret_resource",
    "sds_secret_config",
    "secret_name",
    "secret_value",
]


class MissingSecretError(KeyError):
    """A feature asks for a secret the compile job did not read: a programming error (the
    job reads every ``SecretRef`` of the config), never shown with a value."""


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """A reference to the secret ``name``, delivered over ADS (SDS)."""
    config = secret_pb2.SdsSecretConfig(name=name)
    config.sds_config.CopyFrom(ADS)
    return config


def generic_secret_resource(name: str, value: str) -> Resource:
    """The SDS resource holding ``value`` as a generic secret named ``name``."""
    secret = secret_pb2.Secret(
        name=name,
        generic_secret=secret_pb2.GenericSecret(secret=base_pb2.DataSource(inline_string=value)),
    )
    return Resource.of(name, secret)


def secret_value(ctx: CompileContext, ref: SecretRef) -> str:
    """The value the compile job read for ``ref``."""
    try:
        return ctx.secrets[ref.key()]
    except KeyError:
        raise MissingSecretError(
            f"secret {ref.key()} was not read by the compile job (every SecretRef in the "
            "config should be)"
        ) from None


def secret_name(owner: str, purpose: str) -> str:
    """A stable SDS name for one secret of one config object: ``meshgate/<owner>/<purpose>``
    (``meshgate/login/google/client_secret``); the value's source is not part of the name,
    so moving a secret from a file to an environment variable changes nothing in Envoy."""
    return f"meshgate/{owner}/{purpose}"
