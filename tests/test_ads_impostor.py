"""Impostors on the xDS port: whatever a client claims or asks for, the stream's state, its
log lines and its status entry stay small and printable, and real types keep being served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.xds_client import AdsServer, DeltaClient, SotwClient, mesh, serve_ads
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
