"""Incremental (delta) ADS over a real grpc.aio server, driven by our own client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from tests.xds_client import AdsServer, DeltaClient, mesh, serve_ads, until
from xds_server.server.status import TypeStatus
from xds_server.snapshot.cache import DEFAULT_GROUP
from xds_server.snapshot.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot

S1 = mesh({"a": 9001, "old": 9002}, {"r1": ["a", "old"]}, {"l1": ("r1", 10001)})


@pytest.fixture
async def ads() -> AsyncIterator[AdsServer]:
    async with serve_ads() as srv:
        yield srv


def only_stream(srv: AdsServer, node_id: str) -> dict[str, TypeStatus]:
    streams = [s for s in srv.registry.streams.values() if s.node_id == node_id]
    assert len(streams) == 1, streams
    return streams[0].types


def names(resp: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return sorted(r.name for r in resp.resources)


async def handshake(client: DeltaClient, snap: Snapshot) -> None:
    """Envoy's start over delta: wildcard CDS, EDS for the clusters, wildcard LDS, RDS."""
    client.request(CLUSTER)
    client.ack(await client.recv())
    client.request(ENDPOINT, sorted(snap.of_type(ENDPOINT)))
    client.ack(await client.recv())
    client.request(LISTENER)
    client.ack(await client.recv())
    client.request(ROUTE, sorted(snap.of_type(ROUTE)))
    client.ack(await client.recv())


async def test_ack_records_version(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = DeltaClient(ads.address, "d1")
    client.request(CLUSTER)
    resp = await client.recv()
    assert names(resp) == ["a", "old"]
    assert resp.system_version_info == S1.type_version(CLUSTER)
    assert {r.name: r.version for r in resp.resources} == {
        n: r.version for n, r in S1.of_type(CLUSTER).items()
    }
    assert not resp.removed_resources
    client.ack(resp)
    await until(lambda: only_stream(ads, "d1")[CLUSTER].acked_version == resp.system_version_info)
    await client.expect_silence()
    await client.close()


async def test_nack_recorded_and_same_version_not_resent(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = DeltaClient(ads.address, "d1")
    await handshake(client, S1)
    bad = mesh({"a": 9001, "old": 9002}, {"r1": ["a"]}, {"l1": ("r1", 10001)}, bad_regex="(")
    ads.cache.set_snapshot(DEFAULT_GROUP, bad)
    resp = await client.recv()
    assert resp.type_url == ROUTE and names(resp) == ["r1"]
    client.nack(resp, "regex '(' is invalid")
    await until(lambda: only_stream(ads, "d1")[ROUTE].nack_error == "regex '(' is invalid")
    assert only_stream(ads, "d1")[ROUTE].nack_version == resp.system_version_info
    await client.expect_silence()
    await client.close()


async def test_stale_nonce_ack_is_ignored(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = DeltaClient(ads.address, "d1")
    client.request(CLUSTER)
    first = await client.recv()
    client.ack(first)
    s2 = mesh({"a": 9001, "old": 9002, "b": 9003}, {"r1": ["a"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    second = await client.recv()
    assert names(second) == ["b"]
    client.nack(first, "late complaint")  # carries the superseded nonce
    await client.expect_silence()
    assert only_stream(ads, "d1")[CLUSTER].nack_error == ""
    client.ack(second)
    await until(lambda: only_stream(ads, "d1")[CLUSTER].acked_version == second.system_version_info)
    await client.close()


async def test_subscribe_and_unsubscribe(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = DeltaClient(ads.address, "d1")
    client.request(ENDPOINT, ["a", "old", "missing"])
    resp = await client.recv()
    assert names(resp) == ["a", "old"]  # nothing for a name that does not exist
    client.ack(resp)
    client.request(ENDPOINT, unsubscribe=["old"])
    await client.expect_silence()
    # Both endpoint sets change; only the one still subscribed is sent.
    s2 = mesh({"a": 7001, "old": 7002}, {"r1": ["a", "old"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    update = await client.recv()
    assert names(update) == ["a"] and not update.removed_resources
    client.ack(update)
    await client.expect_silence()
    # The missing name springs into existence: it is sent then.
    s3 = Snapshot.build(
        [
            *s2.of_type(ENDPOINT).values(),
            *mesh({"missing": 7003}, {}, {}).of_type(ENDPOINT).values(),
        ]
    )
    ads.cache.set_snapshot(DEFAULT_GROUP, s3)
    late = await client.recv()
    assert names(late) == ["missing"]
    await client.close()


async def test_removed_cluster_reported_after_routes_moved(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = DeltaClient(ads.address, "d1")
    await handshake(client, S1)
    start = len(client.received)
    # Add cluster b with a route to it; drop cluster old.
    s2 = mesh({"a": 9001, "b": 9004}, {"r1": ["a", "b"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    assert names(cds) == ["b"] and not cds.removed_resources  # old stays for now
    await client.expect_silence()
    client.ack(cds)
    client.request(ENDPOINT, ["b"])  # Envoy subscribes the new cluster's endpoints
    eds = await client.recv()
    assert eds.type_url == ENDPOINT and names(eds) == ["b"]
    client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == ROUTE and names(rds) == ["r1"]
    await client.expect_silence()
    client.ack(rds)
    final = await client.recv()
    assert final.type_url == CLUSTER
    assert list(final.removed_resources) == ["old"] and not final.resources
    assert final.system_version_info == s2.type_version(CLUSTER)
    client.request(ENDPOINT, unsubscribe=["old"])  # Envoy drops old's endpoints itself
    client.ack(final)
    await client.expect_silence()
    assert [r.type_url for r in client.received[start:]] == [CLUSTER, ENDPOINT, ROUTE, CLUSTER]
    assert client.held[CLUSTER] == {n: r.version for n, r in s2.of_type(CLUSTER).items()}
    await client.close()


async def test_reconnect_with_initial_versions(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    first = DeltaClient(ads.address, "d1")
    first.request(CLUSTER)
    first.ack(await first.recv())
    held = dict(first.held[CLUSTER])
    await first.close()
    await until(lambda: not ads.registry.streams)
    # Meanwhile: cluster a unchanged, old gone, c new.
    s2 = mesh({"a": 9001, "c": 9003}, {"r1": ["a", "c"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    again = DeltaClient(ads.address, "d1")
    again.held[CLUSTER] = dict(held)
    again.request(CLUSTER, initial=held)
    resp = await again.recv()
    assert names(resp) == ["c"]  # a is not resent: its version matches
    assert not resp.removed_resources  # make-before-break: removal comes last
    again.ack(resp)
    cleanup = await again.recv()
    assert list(cleanup.removed_resources) == ["old"] and not cleanup.resources
    again.ack(cleanup)
    assert again.held[CLUSTER] == {n: r.version for n, r in s2.of_type(CLUSTER).items()}
    await again.close()


async def test_node_without_snapshot_waits_for_publication(ads: AdsServer) -> None:
    client = DeltaClient(ads.address, "d1")
    client.request(CLUSTER)
    await client.expect_silence()
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    resp = await client.recv()
    assert names(resp) == ["a", "old"]
    await client.close()


async def test_two_clients_each_get_their_responses(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    one, two = DeltaClient(ads.address, "d1"), DeltaClient(ads.address, "d2")
    await asyncio.gather(handshake(one, S1), handshake(two, S1))
    s2 = mesh({"a": 9001, "old": 9003}, {"r1": ["a", "old"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    got = await asyncio.gather(one.recv(), two.recv())
    assert [names(r) for r in got] == [["old"], ["old"]]
    one.ack(got[0])
    two.ack(got[1])
    await until(
        lambda: all(
            only_stream(ads, n)[ENDPOINT].acked_version == s2.type_version(ENDPOINT)
            for n in ("d1", "d2")
        )
    )
    await asyncio.gather(one.close(), two.close())


async def test_a_nack_without_a_message_is_still_a_nack(ads: AdsServer) -> None:
    """``error_detail`` with an empty message: a rejection, said as such, never an ACK."""
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = DeltaClient(ads.address, "d1")
    await handshake(client, S1)
    bad = mesh({"a": 9001, "old": 9002}, {"r1": ["a"]}, {"l1": ("r1", 10001)}, bad_regex="(")
    ads.cache.set_snapshot(DEFAULT_GROUP, bad)
    resp = await client.recv()
    client.nack(resp, "")
    await until(lambda: only_stream(ads, "d1")[ROUTE].nack_version == resp.system_version_info)
    assert only_stream(ads, "d1")[ROUTE].nack_error == "rejected without a message (code 3)"
    await client.close()
