"""Fixtures for tests that run real Envoy, the real control plane and real upstreams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.envoy_process import free_port

from .harness import ControlPlane, Envoy, Upstreams, write_config


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    ups = Upstreams(["alpha", "beta", "gamma"])
    yield ups
    ups.stop()


@pytest.fixture
def listener_port() -> int:
    return free_port()


def base_config(upstreams: Upstreams, port: int, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "public",
                "address": "127.0.0.1",
                "port": port,
                "virtual_hosts": [{"name": "default", "domains": ["*"], "routes": routes}],
            }
        ],
        "services": [
            {"name": name, "endpoints": [{"address": "127.0.0.1", "port": p}]}
            for name, p in upstreams.ports.items()
        ],
    }


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "gateway.yaml"


@pytest.fixture
def stack(
    tmp_path: Path, config_file: Path, upstreams: Upstreams, listener_port: int
) -> Iterator[Callable[..., tuple[ControlPlane, Envoy]]]:
    """Factory: write a config, start control plane + one Envoy, wait until it serves."""
    started: list[ControlPlane | Envoy] = []

    def make(
        routes: list[dict[str, Any]],
        validator: str = "canary",
        extra_services: list[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> tuple[ControlPlane, Envoy]:
        config = base_config(upstreams, listener_port, routes)
        config["services"] += extra_services or []
        write_config(config_file, config)
        cp = ControlPlane(config_file, validator=validator)
        started.append(cp)
        envoy = Envoy(cp.xds_port, **kw)
        started.append(envoy)
        return cp, envoy

    yield make
    for proc in reversed(started):
        proc.stop()
