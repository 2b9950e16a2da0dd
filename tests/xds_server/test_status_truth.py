"""``meshgate status`` says exactly what every Envoy runs and what was refused, and clears
once that is no longer true.

The real control plane (file watcher, publisher, ADS server, status registry, metrics) runs
in-process; the fleet Envoy is our own ADS client, so a test decides exactly when it NACKs.
(The same stories with real Envoy are in tests/integration/test_status_fleet.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.cli.main import format_status, unhealthy
from tests.xds_client import SotwClient, until
from xds_server.app import ControlPlane, Settings, make_service
from xds_server.snapshot.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE

ONE_LISTENER = """\
listeners:
  - name: public
    address: 127.0.0.1
    port: 18080
    virtual_hosts:
      - name: default
        routes:
          - {name: api, match: {prefix: /}, service: alpha}
services:
  - name: alpha
    endpoints: [{address: 127.0.0.1, port: 19001}]
"""

TWO_LISTENERS = ONE_LISTENER.replace(
    "services:",
    """\
  - name: second
    address: 127.0.0.1
    port: 18081
    virtual_hosts:
      - name: default
        routes:
          - {name: api2, match: {prefix: /}, service: alpha}
services:""",
)

BIND_ERROR = (
    "Error adding/updating listener(s) second: cannot bind '127.0.0.1:18081': "
    "Address already in use\n"
)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    path = tmp_path / "gateway.yaml"
    path.write_text(ONE_LISTENER)
    cp = ControlPlane(
        Settings(
            str(path),
            xds_address="127.0.0.1:0",
            admin_address="127.0.0.1:0",
            validator="none",
            poll_interval=3600,  # the test calls check_config() itself
            nack_retry=0.3,
        )
    )
    service = make_service(cp)
    await service.start(cp)
    await cp.check_config()  # the first file compiled and published
    try:
        yield cp
    finally:
        service.request_stop(force=True)
        await service.shutdown()


def gauge(cp: ControlPlane, name: str, **labels: str) -> float | None:
    return cp.metrics.registry.get_sample_value(name, labels)


async def edit(cp: ControlPlane, text: str) -> None:
    Path(cp.settings.config).write_text(text)
    await cp.check_config()


async def connect(cp: ControlPlane) -> SotwClient:
    """A fleet Envoy that accepts the current snapshot, type by type, as Envoy does."""
    snap = cp.publisher.current
    assert snap is not None
    client = SotwClient(f"127.0.0.1:{cp.xds_port}", "envoy-1")
    for type_url, names in (
        (CLUSTER, []),
        (ENDPOINT, sorted(snap.of_type(ENDPOINT))),
        (LISTENER, []),
        (ROUTE, sorted(snap.of_type(ROUTE))),
    ):
        client.request(type_url, names)
        client.ack(await client.recv())
    await until(lambda: cp.status()["fleet"]["in_sync"] == 1)
    return client


def no_blank_lines(text: str) -> bool:
    return all(line.strip() for line in text.splitlines())


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("bad utf-8", "not valid UTF-8: byte 0xff"),
        # a directory is a config too (of its *.yaml files): an empty one is refused
        ("a directory", "the directory holds no config file"),
    ],
)
async def test_restoring_the_file_after_a_read_error_clears_the_rejection(
    plane: ControlPlane, breakage: str, reason: str
) -> None:
    path = Path(plane.settings.config)
    serving = plane.status()["config"]["version"]
    if breakage == "bad utf-8":
        path.write_bytes(b"listeners: \xff\xfe\n")
    else:
        path.unlink()
        path.mkdir()
    await plane.check_config()
    status = plane.status()
    assert status["config"]["errors"][0]["message"].startswith(reason)
    assert unhealthy(status)
    assert gauge(plane, "meshgate_config_valid") == 0
    if breakage == "a directory":
        path.rmdir()
    await edit(plane, ONE_LISTENER)  # the very config that is serving
    status = plane.status()
    assert status["config"]["errors"] == []
    assert status["config"]["version"] == serving
    assert not unhealthy(status)
    assert gauge(plane, "meshgate_config_valid") == 1


async def test_a_fleet_refusal_is_not_shown_as_serving_and_clears_on_revert(
    plane: ControlPlane,
) -> None:
    client = await connect(plane)
    running = plane.status()["config"]["version"]
    assert gauge(plane, "meshgate_config_valid") == 1
    assert gauge(plane, "meshgate_fleet_envoys", state="in_sync") == 1

    await edit(plane, TWO_LISTENERS)
    published = plane.status()["config"]["version"]
    lds = await client.recv()
    assert lds.type_url == LISTENER
    client.nack(lds, BIND_ERROR)
    await until(lambda: plane.status()["fleet"]["refused"] == 1)

    # (c) the control plane offers it, but the Envoy refused it and runs the previous one
    status = plane.status()
    [envoy] = status["envoys"]
    assert envoy["state"] == "refused"
    assert envoy["snapshot"] == published and envoy["running"] == running
    assert envoy["types"]["LDS"]["state"] == "refused"
    assert envoy["types"]["LDS"]["acked_version"] != envoy["types"]["LDS"]["published_version"]
    assert envoy["types"]["CDS"]["state"] == "in_sync"
    assert unhealthy(status)
    assert gauge(plane, "meshgate_config_valid") == 0
    assert gauge(plane, "meshgate_fleet_envoys", state="refused") == 1
    text = format_status(status)
    assert (
        f"published   snapshot {published}" in text
        and "REFUSED     by 1 of 1 Envoys (LDS): Error adding/updating listener(s) second: "
        f"cannot bind '127.0.0.1:18081': Address already in use; they keep running {running}"
        in text
    ), text
    assert "serving" not in text
    assert no_blank_lines(text), text

    # (d) the retry (after --nack-retry) is refused the same way: one entry, counted twice
    again = await client.recv(timeout=5)
    assert again.type_url == LISTENER and again.version_info == lds.version_info
    client.nack(again, BIND_ERROR)
    await until(lambda: plane.status()["recent_nacks"][-1]["count"] == 2)
    [nack] = plane.status()["recent_nacks"]
    assert nack["error"] == BIND_ERROR.strip()
    assert nack["first_at"] <= nack["at"]
    assert no_blank_lines(format_status(plane.status()))

    # (b) back to the config the Envoy still holds: nothing to send, nothing refused any more
    await edit(plane, ONE_LISTENER)
    await until(lambda: plane.status()["fleet"]["in_sync"] == 1)
    status = plane.status()
    [envoy] = status["envoys"]
    assert envoy["state"] == "in_sync" and envoy["running"] == running
    assert all(t["state"] == "in_sync" for t in envoy["types"].values())
    assert not unhealthy(status)
    assert gauge(plane, "meshgate_config_valid") == 1
    assert gauge(plane, "meshgate_fleet_envoys", state="refused") == 0
    assert "NACK" not in format_status(status).split("recent NACKs")[0]
    await client.expect_silence(0.6)  # and the refused version is not retried any more
    await client.close()
    await asyncio.sleep(0)


def test_status_text_escapes_what_clients_and_the_server_put_in_it() -> None:
    """``meshgate status`` prints node ids an impostor chose and NACK text an Envoy wrote, and
    trusts whatever answers --url no more: no terminal escape or extra line gets through."""
    hostile = "\x1b[2J\x1b]0;owned\x07\nFAKE published   snapshot x"
    status = {
        "config": {"source": hostile, "version": "v1", "errors": [{"message": hostile}]},
        "fleet": {"connected": 1, "refusals": [{"types": ["LDS"], "error": hostile}]},
        "envoys": [
            {
                "node_id": hostile,
                "protocol": "sotw",
                "peer": hostile,
                "connected_at": 0,
                "state": "refused",
                "snapshot": "v1",
                "types": {"LDS": {"state": "refused", "nack_error": hostile}},
            }
        ],
        "recent_nacks": [{"node_id": hostile, "type": "LDS", "version": "v1", "error": hostile}],
    }
    text = format_status(status)
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("FAKE") for line in text.splitlines()), text
    assert "\\x1b[2J\\x1b]0;owned\\x07\\nFAKE" in text
