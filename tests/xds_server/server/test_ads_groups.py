"""The snapshot group a stream reads follows from the server it arrived on, not its node id."""

from __future__ import annotations

import grpc

from tests.xds_client import SotwClient, mesh, until
from xds_server.server.ads import AdsServicer, add_to_server
from xds_server.server.status import StatusRegistry
from xds_server.snapshot.cache import CANARY_GROUP, DEFAULT_GROUP, SnapshotCache
from xds_server.snapshot.snapshot import CLUSTER

FLEET = mesh({"fleet": 1}, {}, {})
CANDIDATE = mesh({"candidate": 2}, {}, {})


async def test_a_fleet_client_claiming_the_canary_id_gets_the_fleet_snapshot() -> None:
    cache, registry = SnapshotCache(), StatusRegistry()
    cache.set_snapshot(DEFAULT_GROUP, FLEET)
    cache.set_snapshot(CANARY_GROUP, CANDIDATE)
    public, private = grpc.aio.server(), grpc.aio.server()
    add_to_server(public, AdsServicer(cache, registry, group=DEFAULT_GROUP))
    canary_servicer = AdsServicer(cache, registry, group=CANARY_GROUP)
    add_to_server(private, canary_servicer)
    port = public.add_insecure_port("127.0.0.1:0")
    private_port = private.add_insecure_port("127.0.0.1:0")
    await public.start()
    await private.start()
    impostor = SotwClient(f"127.0.0.1:{port}", "meshgate-canary-1")
    canary = SotwClient(f"127.0.0.1:{private_port}", "anything-at-all")
    try:
        impostor.request(CLUSTER, [])
        canary.request(CLUSTER, [])
        got = await impostor.recv()
        assert [r.type_url for r in got.resources] and got.version_info == FLEET.type_version(
            CLUSTER
        )
        assert (await canary.recv()).version_info == CANDIDATE.type_version(CLUSTER)
        await until(lambda: len(registry.streams) == 2)
        groups = {s.node_id: s.group for s in registry.streams.values()}
        assert groups == {"meshgate-canary-1": DEFAULT_GROUP, "anything-at-all": CANARY_GROUP}
    finally:
        await impostor.close()
        await canary.close()
        canary_servicer.close()
        await public.stop(None)
        await private.stop(None)
