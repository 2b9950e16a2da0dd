"""Filter configs (ECDS) and secrets (SDS) in snapshots: references, versions, rendering.

A listener whose filter asks for its config over ECDS references that config; a filter config
(or a cluster's TLS context) whose ``SdsSecretConfig`` goes over ADS references that secret;
a missing one makes the snapshot inconsistent, like a missing cluster. A snapshot that
differs only in one of them changes only that type's version. Secret values never show in
``meshgate render`` nor in text Envoy may quote them in.
"""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.credential_injector.v3 import credential_injector_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from tests.xds_client import cluster, endpoints, route
from tests.xds_server.server.test_ads_ecds_sds import (
    HEADERS_FILTER,
    INJECT_FILTER,
    SECRET_NAME,
    headers_config,
    snapshot,
)
from xds_server.compiler.extension_configs import (
    discovered_http_filter,
    extension_config_resource,
    type_url_of,
)
from xds_server.compiler.render import snapshot_to_dict
from xds_server.compiler.secrets import (
    generic_secret_resource,
    sds_secret_config,
    secret_name,
)
from xds_server.snapshot.snapshot import (
    CLUSTER,
    CORE_TYPES,
    ENDPOINT,
    EXTENSION_CONFIG,
    LISTENER,
    ORDER,
    ROUTE,
    SECRET,
    InconsistentSnapshotError,
    Resource,
    Snapshot,
    hide_secrets,
)

VALUE = "Very-s3cret-value-for-tests"


def without(snap: Snapshot, type_url: str, name: str) -> list[Resource]:
    return [
        r for t in snap.types for r in snap.of_type(t).values() if (t, r.name) != (type_url, name)
    ]


def test_order_puts_secrets_and_filter_configs_before_the_listeners_that_name_them() -> None:
    assert ORDER == (CLUSTER, ENDPOINT, SECRET, EXTENSION_CONFIG, LISTENER, ROUTE)


def test_listener_and_filter_config_references() -> None:
    snap = snapshot(8080, 9000, "v1", VALUE)
    refs = snap.references
    assert {(r.type_url, r.name, r.via) for r in refs.of(LISTENER, "l1")} >= {
        (EXTENSION_CONFIG, HEADERS_FILTER, f"HTTP filter '{HEADERS_FILTER}' (config_discovery)"),
        (EXTENSION_CONFIG, INJECT_FILTER, f"HTTP filter '{INJECT_FILTER}' (config_discovery)"),
    }
    [secret_ref] = refs.of(EXTENSION_CONFIG, INJECT_FILTER)
    assert (secret_ref.type_url, secret_ref.name) == (SECRET, SECRET_NAME)
    assert refs.referenced(SECRET) == {SECRET_NAME}
    assert refs.referenced(EXTENSION_CONFIG) == {HEADERS_FILTER, INJECT_FILTER}
    listeners = {n: r.version for n, r in snap.of_type(LISTENER).items()}
    assert refs.expected_names(EXTENSION_CONFIG, listeners) == {HEADERS_FILTER, INJECT_FILTER}
    configs = {n: r.version for n, r in snap.of_type(EXTENSION_CONFIG).items()}
    assert refs.expected_names(SECRET, configs, EXTENSION_CONFIG) == {SECRET_NAME}
    assert refs.expected_names(SECRET, listeners, LISTENER) == frozenset()
    assert refs.expected_names(SECRET, {INJECT_FILTER: "old"}, EXTENSION_CONFIG) == frozenset()


def test_a_missing_filter_config_or_secret_is_inconsistent() -> None:
    snap = snapshot(8080, 9000, "v1", VALUE)
    with pytest.raises(InconsistentSnapshotError) as info:
        Snapshot.build(without(snap, EXTENSION_CONFIG, HEADERS_FILTER)).check()
    assert str(info.value) == (
        f"listener 'l1': HTTP filter '{HEADERS_FILTER}' (config_discovery) references missing "
        f"filter config (ECDS) '{HEADERS_FILTER}'"
    )
    with pytest.raises(InconsistentSnapshotError) as info:
        Snapshot.build(without(snap, SECRET, SECRET_NAME)).check()
    assert str(info.value).startswith(f"filter config (ECDS) '{INJECT_FILTER}': ")
    assert str(info.value).endswith(f"references missing secret '{SECRET_NAME}'")


def test_a_tls_context_secret_over_ads_is_a_reference_and_a_bootstrap_one_is_not() -> None:
    tls = tls_pb2.UpstreamTlsContext()
    tls.common_tls_context.tls_certificate_sds_secret_configs.append(sds_secret_config("cert"))
    tls.common_tls_context.tls_certificate_sds_secret_configs.append(
        secret_pb2.SdsSecretConfig(name="from-bootstrap")  # no sds_config: a static secret
    )
    c = cluster("app").unpack()
    c.transport_socket.name = "envoy.transport_sockets.tls"  # type: ignore[attr-defined]
    c.transport_socket.typed_config.Pack(tls)  # type: ignore[attr-defined]
    snap = Snapshot.build([Resource.of("app", c), endpoints("app", 9000)])
    assert snap.consistency_errors() == [
        "cluster 'app': transport_socket.common_tls_context.tls_certificate_sds_secret_configs[0]"
        ".name references missing secret 'cert'"
    ]


def test_only_the_changed_type_changes_version() -> None:
    first = snapshot(8080, 9000, "v1", VALUE)
    header = snapshot(8080, 9000, "v2", VALUE)
    rotated = snapshot(8080, 9000, "v1", VALUE + "-next")
    diff = {t for t in ORDER if header.type_version(t) != first.type_version(t)}
    assert diff == {EXTENSION_CONFIG}
    diff = {t for t in ORDER if rotated.type_version(t) != first.type_version(t)}
    assert diff == {SECRET}
    assert len({first.version, header.version, rotated.version}) == 3


def test_a_snapshot_without_secrets_or_filter_configs_keeps_its_version() -> None:
    """The core types only: a config using neither has the version (and render) it had."""
    plain = Snapshot.build([cluster("a"), endpoints("a", 1), route("r", ["a"])])
    assert plain.types == CORE_TYPES
    assert set(snapshot_to_dict(plain)["resources"]) == {"CDS", "EDS", "LDS", "RDS"}
    assert plain.type_version(SECRET) == plain.type_version(EXTENSION_CONFIG) != ""
    full = snapshot(8080, 9000, "v1", VALUE)
    assert full.types == ORDER


def test_render_shows_secrets_redacted() -> None:
    rendered = snapshot_to_dict(snapshot(8080, 9000, "v1", VALUE))
    assert list(rendered["resources"]) == ["CDS", "EDS", "SDS", "ECDS", "LDS", "RDS"]
    assert rendered["resources"]["SDS"] == [
        {"name": SECRET_NAME, "generic_secret": {"secret": {"inline_string": "<redacted>"}}}
    ]
    assert VALUE not in str(rendered)
    assert {c["name"] for c in rendered["resources"]["ECDS"]} == {HEADERS_FILTER, INJECT_FILTER}


def test_secret_values_are_hidden_from_text_that_quotes_them() -> None:
    snap = snapshot(8080, 9000, "v1", 'q"uote-' + VALUE)
    nack = (
        "Proto constraint failed: generic_secret { secret { inline_string: "
        f'"q\\"uote-{VALUE}" }}}} }}}}'
    )
    assert VALUE not in snap.hide_secrets(nack)
    assert "<redacted secret>" in snap.hide_secrets(nack)
    assert hide_secrets("abc", []) == "abc"
    assert VALUE not in repr(snap.of_type(SECRET)[SECRET_NAME])


def test_helpers_build_what_envoy_expects() -> None:
    flt = discovered_http_filter("f", header_mutation_pb2.HeaderMutation, disabled=True)
    assert flt.disabled and not flt.HasField("typed_config")
    assert flt.config_discovery.config_source.HasField("ads")
    assert list(flt.config_discovery.type_urls) == [
        "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
    ]
    assert type_url_of(credential_injector_pb2.CredentialInjector()) == type_url_of(
        credential_injector_pb2.CredentialInjector
    )
    res = extension_config_resource("f", headers_config("v"))
    assert (res.name, res.type_url) == ("f", EXTENSION_CONFIG)
    secret = generic_secret_resource("s", "value").unpack()
    assert isinstance(secret, secret_pb2.Secret)
    assert secret.generic_secret.secret == base_pb2.DataSource(inline_string="value")
    assert secret_name("login/google", "client_secret") == "meshgate/login/google/client_secret"
