"""Impostors on the xDS port: whatever a client claims or asks for, the stream's state, its
log lines and its status entry stay small and printable, and real types keep being served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import generate_latest

from tests.xds_client import AdsServer, DeltaClient, SotwClient, mesh, serve_ads, until
from xds_server.metrics import XdsMetrics
from xds_server.server import delta
from xds_server.server.ads import DEFAULT_MAX_STREAMS
from xds_server.server.stream import MAX_NODE_TEXT
from xds_server.snapshot.cache import DEFAULT_GROUP
from xds_server.snapshot.snapshot import CLUSTER, ENDPOINT

S1 = mesh({"a": 9001}, {"r1": ["a"]}, {"l1": ("r1", 10001)})
HOSTILE_ID = "\x1b[2J\x1b]0;owned\x07evil\nFAKE LINE " + "x" * 1_000_000


@pytest.fixture
async def ads() -> AsyncIterator[AdsServer]:
    async with serve_ads() as srv:
        srv.cache.set_snapshot(DEFAULT_GROUP, S1)
        yield srv


@pytest.mark.parametrize("client_type", [SotwClient, DeltaClient])
async def test_node_id_is_bounded_and_escaped(
    ads: AdsServer, client_type: type[SotwClient] | type[DeltaClient]
) -> None:
    client = client_type(ads.address, HOSTILE_ID, cluster="\x1b[31m" + "c" * 100_000)
    try:
        client.request(CLUSTER)
        await client.recv()
        (st,) = ads.registry.streams.values()
        for text in (st.node_id, st.cluster):
            assert len(text) <= 4 * MAX_NODE_TEXT + 1  # escaped excerpt and its "…"
            assert text.isprintable(), text
        assert st.node_id.startswith("\\x1b[2J\\x1b]0;owned\\x07evil\\nFAKE LINE x")
    finally:
        await client.close()


@pytest.mark.parametrize("client_type", [SotwClient, DeltaClient])
async def test_made_up_type_urls_are_capped_and_real_types_still_served(
    ads: AdsServer, client_type: type[SotwClient] | type[DeltaClient]
) -> None:
    client = client_type(ads.address, "imp")
    try:
        client.request(CLUSTER)
        client.ack(await client.recv())  # type: ignore[arg-type]
        client.request(ENDPOINT)
        client.ack(await client.recv())  # type: ignore[arg-type]
        for i in range(640):
            client.request(f"type.googleapis.com/made.up.Type{i}")
        # answered after every request above was handled: a type it follows is still served
        client.request(ENDPOINT, ["a"])
        resp = await client.recv(timeout=5)
        while resp.type_url != ENDPOINT:
            resp = await client.recv(timeout=5)
        assert len(resp.resources) == 1
        (st,) = ads.registry.streams.values()
        assert len(st.types) <= 64  # not one per made-up type
    finally:
        await client.close()


async def test_streams_past_the_limit_are_refused_and_the_served_ones_keep_going(
    ads: AdsServer,
) -> None:
    """Anyone who reaches the port can open streams; past the limit they are refused with
    RESOURCE_EXHAUSTED (Envoy retries with backoff) instead of growing the control plane."""
    assert 100 <= DEFAULT_MAX_STREAMS <= 10_000
    ads.servicer.max_streams = 3
    clients = [SotwClient(ads.address, f"n{i}") for i in range(3)]
    extra = later = None
    try:
        for c in clients:
            c.request(CLUSTER)
            await c.recv()
        extra = SotwClient(ads.address, "one-too-many")  # a call starts when it is made
        extra.request(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await extra.recv()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ads.servicer.refused_streams == 1 and ads.servicer.stream_count == 3
        await clients.pop().close()
        await until(lambda: ads.servicer.stream_count == 2)
        later = SotwClient(ads.address, "later")
        later.request(CLUSTER)
        assert (await later.recv()).type_url == CLUSTER
    finally:
        for c in [*clients, extra, later]:
            if c is not None:
                await c.close()


async def test_delta_subscriptions_stop_growing_at_the_limit(
    ads: AdsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delta subscriptions accumulate request after request: an impostor naming new made-up
    resources forever must not grow the stream without bound."""
    monkeypatch.setattr(delta, "MAX_NAMES", 100)

    def stream_names() -> set[str]:
        (stream,) = ads.servicer._streams
        return stream.planner.track(ENDPOINT).names

    client = DeltaClient(ads.address, "imp")
    try:
        client.request(ENDPOINT, ["a"])
        client.ack(await client.recv())
        for batch in range(5):
            client.request(ENDPOINT, [f"made-up-{batch}-{i}" for i in range(60)])
        client.request(ENDPOINT, unsubscribe=["a"])  # handled after every batch above
        await until(lambda: "a" not in stream_names())
        assert 60 <= len(stream_names()) <= 100
    finally:
        await client.close()


async def test_made_up_types_share_one_metric_label(ads: AdsServer) -> None:
    """Metrics are labelled by type: a label per type URL a client names would give an
    impostor unbounded series in /metrics."""
    metrics = XdsMetrics()
    ads.registry.add_listener(metrics.on_event)
    clients = [SotwClient(ads.address, f"imp{i}") for i in range(3)]
    try:
        for n, client in enumerate(clients):
            client.request(CLUSTER)
            await client.recv()
            for i in range(5):
                client.request(f"type.googleapis.com/made.up.Type{n}x{i}")
                await client.recv()
        text = generate_latest(metrics.registry).decode()
        sent = [ln for ln in text.splitlines() if ln.startswith("meshgate_xds_responses_total{")]
        assert sorted(sent) == [
            'meshgate_xds_responses_total{type="CDS"} 3.0',
            'meshgate_xds_responses_total{type="other"} 15.0',
        ]
    finally:
        for client in clients:
            await client.close()
