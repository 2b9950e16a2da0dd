"""State-of-the-world ADS over a real grpc.aio server, driven by our own client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.xds_client import AdsServer, SotwClient, mesh, serve_ads, until
from tests.xds_server.server.test_ads_ecds_sds import (
    HEADERS_FILTER,
    INJECT_FILTER,
    SECRET_NAME,
    listener,
    snapshot,
)
from xds_server.server.status import TypeStatus
from xds_server.snapshot.cache import DEFAULT_GROUP
from xds_server.snapshot.snapshot import (
    CLUSTER,
    ENDPOINT,
    EXTENSION_CONFIG,
    LISTENER,
    ROUTE,
    SECRET,
    Snapshot,
)

S1 = mesh({"a": 9001, "old": 9002}, {"r1": ["a", "old"]}, {"l1": ("r1", 10001)})


@pytest.fixture
async def ads() -> AsyncIterator[AdsServer]:
    async with serve_ads() as srv:
        yield srv


def only_stream(srv: AdsServer, node_id: str) -> dict[str, TypeStatus]:
    streams = [s for s in srv.registry.streams.values() if s.node_id == node_id]
    assert len(streams) == 1, streams
    return streams[0].types


def names_of(resp: object) -> list[str]:
    out = []
    for any_msg in resp.resources:  # type: ignore[attr-defined]
        if any_msg.type_url == CLUSTER:
            c = cluster_pb2.Cluster()
            any_msg.Unpack(c)
            out.append(c.name)
        else:
            out.append(any_msg.type_url)
    return sorted(out)


async def handshake(client: SotwClient, snap: Snapshot) -> None:
    """What Envoy does on start: CDS, then EDS for the clusters, LDS, then RDS; ACK each."""
    client.request(CLUSTER, [])
    client.ack(await client.recv())
    client.request(ENDPOINT, sorted(snap.of_type(ENDPOINT)))
    client.ack(await client.recv())
    client.request(LISTENER, [])
    client.ack(await client.recv())
    client.request(ROUTE, sorted(snap.of_type(ROUTE)))
    client.ack(await client.recv())


async def test_ack_records_version(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    client.request(CLUSTER, [])
    resp = await client.recv()
    assert resp.type_url == CLUSTER
    assert resp.version_info == S1.type_version(CLUSTER)
    assert names_of(resp) == ["a", "old"]
    assert only_stream(ads, "n1")[CLUSTER].acked_version == ""
    client.ack(resp)
    await until(lambda: only_stream(ads, "n1")[CLUSTER].acked_version == resp.version_info)
    await client.expect_silence()
    await client.close()


async def test_nack_recorded_and_same_version_not_resent(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    await handshake(client, S1)
    bad = mesh({"a": 9001, "old": 9002}, {"r1": ["a"]}, {"l1": ("r1", 10001)}, bad_regex="(")
    ads.cache.set_snapshot(DEFAULT_GROUP, bad)
    resp = await client.recv()
    assert resp.type_url == ROUTE
    client.nack(resp, "invalid regex '(': missing )")
    await until(lambda: only_stream(ads, "n1")[ROUTE].nack_version == resp.version_info)
    status = only_stream(ads, "n1")[ROUTE]
    assert status.nack_error == "invalid regex '(': missing )"
    assert status.acked_version == S1.type_version(ROUTE)
    assert ads.registry.recent_nacks[-1]["type"] == "RDS"
    await client.expect_silence()
    # A later snapshot that changes CDS but still carries the rejected routes: CDS goes out,
    # the rejected RDS version is never resent.
    bad2 = mesh({"a": 9001, "old": 9002, "c": 9003}, {"r1": ["a"]}, {"l1": ("r1", 10001)}, "(")
    ads.cache.set_snapshot(DEFAULT_GROUP, bad2)
    resp2 = await client.recv()
    assert resp2.type_url == CLUSTER
    client.ack(resp2)
    client.request(ENDPOINT, ["a", "c", "old"], nonce=client.last[ENDPOINT].nonce)
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    client.ack(eds)
    await client.expect_silence()
    assert only_stream(ads, "n1")[ROUTE].sent_version == resp.version_info
    await client.close()


async def test_stale_nonce_is_ignored(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    client.request(CLUSTER, [])
    first = await client.recv()
    client.ack(first)
    s2 = mesh({"a": 9001}, {"r1": ["a"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    second = await client.recv()
    assert second.nonce != first.nonce
    # A NACK carrying the superseded nonce must change nothing and get no answer.
    client.request(CLUSTER, nonce=first.nonce, error="late complaint")
    await client.expect_silence()
    status = only_stream(ads, "n1")[CLUSTER]
    assert status.nack_error == "" and ads.registry.recent_nacks == []
    client.ack(second)
    await until(lambda: only_stream(ads, "n1")[CLUSTER].acked_version == second.version_info)
    await client.close()


async def test_resubscribe_after_reconnect(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    first = SotwClient(ads.address, "n1")
    await handshake(first, S1)
    known = dict(first.accepted)
    await first.close()
    await until(lambda: not ads.registry.streams)
    # The new stream states the versions it holds and an empty nonce: it is answered anyway.
    again = SotwClient(ads.address, "n1")
    again.request(CLUSTER, [], version=known[CLUSTER])
    resp = await again.recv()
    assert resp.version_info == known[CLUSTER]
    assert names_of(resp) == ["a", "old"]
    again.ack(resp)
    again.request(ENDPOINT, ["a", "old"], version=known[ENDPOINT])
    eds = await again.recv()
    assert eds.type_url == ENDPOINT and len(eds.resources) == 2
    again.ack(eds)
    await until(lambda: only_stream(ads, "n1")[ENDPOINT].acked_version == known[ENDPOINT])
    await again.close()


async def test_node_without_snapshot_waits_for_publication(ads: AdsServer) -> None:
    client = SotwClient(ads.address, "n1")
    client.request(CLUSTER, [])
    await client.expect_silence()
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    resp = await client.recv()
    assert names_of(resp) == ["a", "old"]
    await client.close()


async def test_two_clients_each_get_their_responses(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    one, two = SotwClient(ads.address, "n1"), SotwClient(ads.address, "n2")
    await asyncio.gather(handshake(one, S1), handshake(two, S1))
    s2 = mesh({"a": 9001, "old": 9003}, {"r1": ["a", "old"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    got = await asyncio.gather(one.recv(), two.recv())
    assert [r.type_url for r in got] == [ENDPOINT, ENDPOINT]
    assert got[0].nonce != got[1].nonce
    one.ack(got[0])
    two.ack(got[1])
    for node in ("n1", "n2"):
        await until(
            lambda n=node: (
                only_stream(ads, n)[ENDPOINT].acked_version  # type: ignore[misc]
                == s2.type_version(ENDPOINT)
            )
        )
    await asyncio.gather(one.close(), two.close())


async def test_make_before_break_order(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    await handshake(client, S1)
    start = len(client.received)
    # Add cluster b and route to it, drop cluster old.
    s2 = mesh({"a": 9001, "b": 9004}, {"r1": ["a", "b"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    assert names_of(cds) == ["a", "b", "old"]  # old kept until the routes moved off it
    await client.expect_silence()  # nothing else before CDS is ACKed
    client.ack(cds)
    # Like Envoy: the new cluster b warms and asks EDS for it, which is answered at once.
    client.request(ENDPOINT, ["a", "b", "old"], nonce=client.last[ENDPOINT].nonce)
    eds = await client.recv()
    assert eds.type_url == ENDPOINT and len(eds.resources) == 3
    client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == ROUTE and rds.version_info == s2.type_version(ROUTE)
    await client.expect_silence()  # old cluster removal waits for the RDS ACK
    client.ack(rds)
    final = await client.recv()
    assert final.type_url == CLUSTER
    assert names_of(final) == ["a", "b"]
    assert final.version_info == s2.type_version(CLUSTER)
    client.ack(final)
    client.request(ENDPOINT, ["a", "b"], nonce=eds.nonce)  # Envoy forgets old's endpoints
    await client.expect_silence()
    order = [r.type_url for r in client.received[start:]]
    assert order == [CLUSTER, ENDPOINT, ROUTE, CLUSTER]
    await until(
        lambda: all(
            only_stream(ads, "n1")[t].acked_version == s2.type_version(t)
            for t in (CLUSTER, LISTENER, ROUTE)
        )
    )
    await client.close()


async def test_newer_snapshot_mid_transition_restarts_toward_newest(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    await handshake(client, S1)
    s2 = mesh({"a": 9001, "b": 9004}, {"r1": ["a", "b"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    cds = await client.recv()
    assert names_of(cds) == ["a", "b", "old"]
    s3 = mesh({"a": 9001, "c": 9005}, {"r1": ["a", "c"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s3)
    client.ack(cds)
    cds3 = await client.recv()  # restarted: c added, b and old both kept for now
    assert names_of(cds3) == ["a", "b", "c", "old"]
    client.ack(cds3)
    await client.expect_silence()  # routes wait until the new clusters' endpoints are asked for
    client.request(ENDPOINT, ["a", "b", "c", "old"], nonce=client.last[ENDPOINT].nonce)
    client.ack(await client.recv())
    rds = await client.recv()
    assert rds.type_url == ROUTE and rds.version_info == s3.type_version(ROUTE)
    client.ack(rds)
    final = await client.recv()
    assert names_of(final) == ["a", "c"]
    await client.close()


async def test_client_cancel_closes_stream_in_registry(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    client.request(CLUSTER, [])
    await client.recv()
    assert len(ads.registry.streams) == 1
    await client.close()
    # grpc delivers the cancel to the handler from its own poller thread: seconds on a loaded
    # CI machine (2 s was seen to be too short); a stream that is never closed still fails
    await until(lambda: not ads.registry.streams and ads.servicer.stream_count == 0, 10)


async def test_close_ends_streams_promptly() -> None:
    async with serve_ads() as srv:
        srv.cache.set_snapshot(DEFAULT_GROUP, S1)
        client = SotwClient(srv.address, "n1")
        client.request(CLUSTER, [])
        await client.recv()
        started = time.monotonic()
        srv.servicer.close()
        with pytest.raises(EOFError):
            await client.recv()  # ended with status OK, so Envoy reconnects
        await srv.server.stop(5)
        assert time.monotonic() - started < 2
        assert not srv.registry.streams
        await client.close()


async def test_one_type_at_a_time_in_order(ads: AdsServer) -> None:
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    await handshake(client, S1)
    # New endpoints for a and new routes, no new names: EDS first, RDS only after its ACK.
    s2 = mesh({"a": 7001, "old": 9002}, {"r1": ["a"]}, {"l1": ("r1", 10001)})
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    await client.expect_silence()
    client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == ROUTE
    client.ack(rds)
    await client.expect_silence()
    await client.close()


async def test_first_request_answered_even_when_empty(ads: AdsServer) -> None:
    # Envoy finishes initialising only after a first LDS response, even one with no listeners.
    ads.cache.set_snapshot(DEFAULT_GROUP, mesh({"a": 9001}, {}, {}))
    client = SotwClient(ads.address, "n1")
    client.request(LISTENER, [])
    resp = await client.recv()
    assert resp.type_url == LISTENER and len(resp.resources) == 0
    await client.close()


async def test_a_nack_without_a_message_is_still_a_nack(ads: AdsServer) -> None:
    """``error_detail`` with an empty message: a rejection, said as such, never an ACK."""
    ads.cache.set_snapshot(DEFAULT_GROUP, S1)
    client = SotwClient(ads.address, "n1")
    await handshake(client, S1)
    bad = mesh({"a": 9001, "old": 9002}, {"r1": ["a"]}, {"l1": ("r1", 10001)}, bad_regex="(")
    ads.cache.set_snapshot(DEFAULT_GROUP, bad)
    resp = await client.recv()
    client.nack(resp, "")
    await until(lambda: only_stream(ads, "n1")[ROUTE].nack_version == resp.version_info)
    assert only_stream(ads, "n1")[ROUTE].nack_error == "rejected without a message (code 3)"
    assert only_stream(ads, "n1")[ROUTE].acked_version == S1.type_version(ROUTE)
    await client.close()


async def test_secrets_and_filter_configs_go_before_the_listeners_that_use_them(
    ads: AdsServer,
) -> None:
    """A snapshot changing a listener, its filter config (ECDS) and a secret (SDS): the secret
    and the filter config are pushed first, each after the previous ACK, then the listener."""
    s1 = snapshot(10001, 9001, "v1", "first-secret-value")
    ads.cache.set_snapshot(DEFAULT_GROUP, s1)
    client = SotwClient(ads.address, "n1")
    await handshake(client, s1)
    client.request(EXTENSION_CONFIG, [HEADERS_FILTER, INJECT_FILTER])
    client.ack(await client.recv())
    client.request(SECRET, [SECRET_NAME])
    client.ack(await client.recv())
    await client.expect_silence()
    start = len(client.received)

    s2_parts = snapshot(10001, 9001, "v2", "second-secret-value")
    s2 = Snapshot.build(
        [r for t in s2_parts.types for r in s2_parts.of_type(t).values() if t != LISTENER]
        + [listener(10001, stat_prefix="renamed")]
    ).check()
    assert all(s2.type_version(t) != s1.type_version(t) for t in (SECRET, EXTENSION_CONFIG))
    ads.cache.set_snapshot(DEFAULT_GROUP, s2)
    for expected in (SECRET, EXTENSION_CONFIG, LISTENER):
        resp = await client.recv()
        assert resp.type_url == expected and resp.version_info == s2.type_version(expected)
        await client.expect_silence()  # the next type waits for this ACK
        client.ack(resp)
    await client.expect_silence()
    assert [r.type_url for r in client.received[start:]] == [SECRET, EXTENSION_CONFIG, LISTENER]
    await until(
        lambda: all(only_stream(ads, "n1")[t].acked_version == s2.type_version(t) for t in s2.types)
    )
    await client.close()
