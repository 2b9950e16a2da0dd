"""Re-keying a published snapshot (keys changed while the config is rejected) gives exactly
what compiling the config with those keys gives, and touches nothing else."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

from meshgate.config import GatewayConfig
from tests.support.staff_gateway import staff_config
from tests.support.tokens import SigningKey, jwks_of
from xds_server.compiler import IssuerKeys, compile_snapshot
from xds_server.compiler.features.jwt.keys import NO_KEY
from xds_server.compiler.features.jwt.rekey import rekeyed
from xds_server.compiler.identity_names import JWT_FILTER
from xds_server.jwks.source import jwks_sources
from xds_server.snapshot.snapshot import EXTENSION_CONFIG, Snapshot

K1, K2, RSA = SigningKey.ec("k1"), SigningKey.ec("k2"), SigningKey.rsa("r1")
FIXED = SigningKey.ec("fixed")
URL = "https://idp.example/jwks"
FINGERPRINT = f"url:{URL}"


def config(url: str = URL) -> GatewayConfig:
    fixed = {
        "name": "fixed",
        "issuer": "https://fixed.example",
        "audiences": "api",
        "algorithms": ["ES256"],
        "jwks": {"inline": jwks_of(FIXED)},
    }
    return GatewayConfig.model_validate(staff_config({"url": url}, more_issuers=(fixed,)))


def keys(*signing: SigningKey, fingerprint: str = FINGERPRINT) -> dict[str, IssuerKeys]:
    return {"corp": IssuerKeys(fingerprint, json.dumps(jwks_of(*signing)))}


def compiled(fetched: dict[str, IssuerKeys], cfg: GatewayConfig | None = None) -> Snapshot:
    return compile_snapshot(cfg or config(), labels={"digest": "d1"}, jwks=fetched)


def served(snapshot: Snapshot, provider: str) -> list[dict[str, Any]]:
    resource = snapshot.of_type(EXTENSION_CONFIG)[JWT_FILTER]
    extension = resource.unpack()
    assert isinstance(extension, extension_pb2.TypedExtensionConfig)
    auth = jwt_pb2.JwtAuthentication()
    assert extension.typed_config.Unpack(auth)
    doc: dict[str, Any] = json.loads(auth.providers[provider].local_jwks.inline_string)
    return list(doc["keys"])


SOURCES = jwks_sources(config(), lambda index: "/etc/meshgate")


def test_rekeyed_is_what_a_compile_with_the_new_keys_gives() -> None:
    published = compiled(keys(K1))
    new = rekeyed(published, SOURCES, keys(K1, K2))
    assert new.version == compiled(keys(K1, K2)).version
    assert [k["kid"] for k in served(new, "corp")] == ["k1", "k2"]
    # only the jwt_authn config changed: listeners are untouched (no drain), labels kept
    assert new.versions[EXTENSION_CONFIG] != published.versions[EXTENSION_CONFIG]
    for type_url, version in published.versions.items():
        if type_url != EXTENSION_CONFIG:
            assert new.versions[type_url] == version
    assert new.labels == published.labels
    # the inline issuer keeps the config's keys
    assert served(new, "fixed") == served(published, "fixed")


def test_the_same_keys_give_the_same_snapshot_object() -> None:
    published = compiled(keys(K1))
    assert rekeyed(published, SOURCES, keys(K1)) is published


def test_keys_gone_or_fetched_for_another_source_leave_a_key_no_token_matches() -> None:
    published = compiled(keys(K1))
    expired = rekeyed(published, SOURCES, {})  # past max_stale: the manager's view drops it
    assert served(expired, "corp") == [NO_KEY]
    assert expired.version == compiled({}).version
    elsewhere = rekeyed(published, SOURCES, keys(K2, fingerprint="url:https://other/jwks"))
    assert served(elsewhere, "corp") == [NO_KEY]


def test_only_keys_for_the_issuers_algorithms_are_served() -> None:
    published = compiled(keys(K1))
    new = rekeyed(published, SOURCES, keys(RSA, K2))  # RSA cannot serve ES256
    assert [k["kid"] for k in served(new, "corp")] == ["k2"]
    assert new.version == compiled(keys(RSA, K2)).version


def test_a_snapshot_without_jwt_authn_is_left_alone() -> None:
    cfg = config().model_copy(update={"policies": []})
    listener = cfg.listeners[0]
    vhost = listener.virtual_hosts[0].model_copy(update={"policy": None})
    cfg = cfg.model_copy(
        update={"listeners": [listener.model_copy(update={"virtual_hosts": [vhost]})]}
    )
    published = compiled(keys(K1), cfg)
    assert JWT_FILTER not in published.of_type(EXTENSION_CONFIG)
    assert rekeyed(published, SOURCES, keys(K2)) is published
