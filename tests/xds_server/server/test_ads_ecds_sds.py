"""ECDS and SDS through real Envoy, over SotW and delta.

A listener whose HTTP filters take their configs over ECDS: a header_mutation filter (adds a
response header) and a credential_injector filter whose config names a generic secret over SDS
(it adds the secret as a request header, so the upstream shows what Envoy got). Then:

* a snapshot that differs only in the header_mutation config changes only the ECDS version:
  Envoy applies it (the response header changes) without a listener update
  (``listener_manager.listener_modified`` stays, the listener's version in /config_dump too);
* a rotated secret changes only the SDS version, and the upstream sees the new value, again
  without a listener update;
* the secret's value appears nowhere but at the upstream: not in Envoy's /config_dump (where
  ``GenericSecret.secret`` is redacted), Envoy's log, our status, or our logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.credential_injector.v3 import credential_injector_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.injected_credentials.generic.v3 import generic_pb2

from meshgate.proxy.envoy_process import free_port
from tests.integration.harness import Upstreams
from tests.xds_client import AdsServer, cluster, endpoints, route, serve_ads
from tests.xds_server.server.test_ads_envoy import config_dump, envoy_on, eventually, section
from xds_server.compiler.extension_configs import (
    discovered_http_filter,
    extension_config_resource,
)
from xds_server.compiler.protos import ADS, pack
from xds_server.compiler.secrets import generic_secret_resource, sds_secret_config
from xds_server.server.status import StreamStatus
from xds_server.snapshot.cache import DEFAULT_GROUP
from xds_server.snapshot.snapshot import (
    EXTENSION_CONFIG,
    LISTENER,
    SECRET,
    Resource,
    Snapshot,
)

pytestmark = [pytest.mark.integration]

NODE = "envoy-it"
HEADERS_FILTER = "meshgate.test.response_headers"
INJECT_FILTER = "meshgate.test.inject"
SECRET_NAME = "meshgate/test/upstream-token"
FIRST_SECRET = "s3cr3t-Value-0f-the-first-kind"
SECOND_SECRET = "an0ther-Secr3t-after-rotation"


def headers_config(value: str) -> header_mutation_pb2.HeaderMutation:
    add = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="x-ecds", value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    mutation = mutation_rules_pb2.HeaderMutation(append=add)
    return header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(response_mutations=[mutation])
    )


def inject_config() -> credential_injector_pb2.CredentialInjector:
    generic = generic_pb2.Generic(credential=sds_secret_config(SECRET_NAME), header="x-token")
    credential = credential_injector_pb2.CredentialInjector(overwrite=True)
    credential.credential.name = "envoy.http.injected_credentials.generic"
    credential.credential.typed_config.CopyFrom(pack(generic))
    return credential


def listener(port: int, stat_prefix: str = "l1") -> Resource:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(route_config_name="r1", config_source=ADS),
        http_filters=[
            discovered_http_filter(HEADERS_FILTER, header_mutation_pb2.HeaderMutation),
            discovered_http_filter(INJECT_FILTER, credential_injector_pb2.CredentialInjector),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            ),
        ],
    )
    sa = address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    return Resource.of(
        "l1",
        listener_pb2.Listener(
            name="l1",
            address=address_pb2.Address(socket_address=sa),
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
        ),
    )


def snapshot(port: int, upstream: int, header: str, secret: str) -> Snapshot:
    return Snapshot.build(
        [
            cluster("backend"),
            endpoints("backend", upstream),
            route("r1", ["backend"]),
            listener(port),
            extension_config_resource(HEADERS_FILTER, headers_config(header)),
            extension_config_resource(INJECT_FILTER, inject_config()),
            generic_secret_resource(SECRET_NAME, secret),
        ]
    ).check()


def get(port: int) -> tuple[dict[str, str], dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/backend", timeout=2) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())


def stat(admin: str, name: str) -> int:
    with urllib.request.urlopen(f"http://{admin}/stats?filter=^{name}$", timeout=2) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise AssertionError(f"no stat {name} in {text!r}")


def listener_version(dump: dict[str, Any]) -> str:
    [entry] = section(dump, "ListenersConfigDump")["dynamic_listeners"]
    return str(entry["active_state"]["version_info"])


@pytest.fixture
async def ads() -> AsyncIterator[AdsServer]:
    async with serve_ads() as srv:
        yield srv


@pytest.fixture
def upstream() -> Iterator[int]:
    ups = Upstreams(["echo"])
    try:
        yield ups.ports["echo"]
    finally:
        ups.stop()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {getattr(record, 'fields', '')}")


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_filter_config_and_secret_change_without_listener_update(
    ads: AdsServer, upstream: int, tmp_path: Path, api_type: str
) -> None:
    captured = Captured()
    logging.getLogger("meshgate").addHandler(captured)
    port = free_port()
    first = snapshot(port, upstream, "v1", FIRST_SECRET)
    ads.cache.set_snapshot(DEFAULT_GROUP, first)
    log_path = tmp_path / "envoy.log"
    try:
        async with envoy_on(ads.port, api_type, tmp_path) as admin:

            def stream() -> StreamStatus | None:
                return next((s for s in ads.registry.streams.values() if s.node_id == NODE), None)

            def runs(snap: Snapshot) -> bool:
                st = stream()
                return st is not None and all(
                    t in st.types and st.types[t].acked_version == snap.type_version(t)
                    for t in snap.types
                )

            await eventually(lambda: runs(first), "every type ACKed, ECDS and SDS included")

            def answers(header: str, token: str) -> bool:
                try:
                    headers, body = get(port)
                except OSError:
                    return False
                return headers.get("x-ecds") == header and body["headers"].get("x-token") == token

            await eventually(lambda: answers("v1", FIRST_SECRET), "the first configs in force")
            modified = await asyncio.to_thread(stat, admin, "listener_manager.listener_modified")
            version = listener_version(await asyncio.to_thread(config_dump, admin))

            # Only the filter config changes: only ECDS is new, and Envoy applies it in place.
            second = snapshot(port, upstream, "v2", FIRST_SECRET)
            changed = {t for t in second.types if second.type_version(t) != first.type_version(t)}
            assert changed == {EXTENSION_CONFIG}
            ads.cache.set_snapshot(DEFAULT_GROUP, second)
            await eventually(lambda: answers("v2", FIRST_SECRET), "the new filter config in force")

            # Only the secret changes: only SDS is new, and the upstream sees the new value.
            third = snapshot(port, upstream, "v2", SECOND_SECRET)
            changed = {t for t in third.types if third.type_version(t) != second.type_version(t)}
            assert changed == {SECRET}
            ads.cache.set_snapshot(DEFAULT_GROUP, third)
            await eventually(lambda: answers("v2", SECOND_SECRET), "the rotated secret in force")
            await eventually(lambda: runs(third), "every type ACKed")

            assert third.type_version(LISTENER) == first.type_version(LISTENER)
            dump = await asyncio.to_thread(config_dump, admin)
            assert listener_version(dump) == version
            after = await asyncio.to_thread(stat, admin, "listener_manager.listener_modified")
            assert after == modified, "a filter config or secret change must not update a listener"

            # The control: a listener change is counted by the same stat.
            renamed = Snapshot.build(
                [r for t in third.types for r in third.of_type(t).values() if t != LISTENER]
                + [listener(port, stat_prefix="l1-renamed")]
            ).check()
            ads.cache.set_snapshot(DEFAULT_GROUP, renamed)
            await eventually(lambda: runs(renamed), "the changed listener ACKed")
            await eventually(
                lambda: stat(admin, "listener_manager.listener_modified") == modified + 1,
                "the listener update counted",
            )

            # Envoy shows the secret, redacted; the value is nowhere in the dump.
            text = json.dumps(dump)
            secrets = section(dump, "SecretsConfigDump")["dynamic_active_secrets"]
            assert [s["name"] for s in secrets] == [SECRET_NAME]
            assert secrets[0]["secret"]["generic_secret"]["secret"]["inline_string"] == "[redacted]"
            ecds = section(dump, "EcdsConfigDump")["ecds_filters"]
            assert {e["ecds_filter"]["name"] for e in ecds} == {HEADERS_FILTER, INJECT_FILTER}
            for value in (FIRST_SECRET, SECOND_SECRET):
                assert value not in text
                assert value not in log_path.read_text(errors="replace")
                assert value not in json.dumps(ads.registry.as_dict())
                assert not [line for line in captured.lines if value in line]
    finally:
        logging.getLogger("meshgate").removeHandler(captured)
