"""free_port never hands out a port twice, nor one the kernel hands out itself."""

from __future__ import annotations

import socket

from meshgate.proxy.envoy_process import _ephemeral_start, free_port


def test_ports_are_unique_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < p < _ephemeral_start() for p in ports)


def test_a_released_port_is_not_handed_out_again_even_if_the_kernel_would() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # free now; taken and released by its owner
    assert all(free_port() != port for _ in range(100))
