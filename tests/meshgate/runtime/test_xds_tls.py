"""Mutual TLS pieces without Envoy: the local CA, the TLS file checks, rotation over real gRPC,
and the rule that xDS beyond loopback needs mutual TLS (or an explicit --insecure-xds)."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshgate.proxy.bootstrap import (
    BootstrapParams,
    XdsTls,
    render_bootstrap,
    xds_tls_transport_socket,
)
from meshgate.runtime.grpc_server import SERVING, add_health, add_port, make_server
from meshgate.runtime.pki import LocalPki, ensure_local_pki
from meshgate.runtime.tls import TlsConfigError, TlsFiles
from tests.paths import ROOT
from xds_server.app import parse_args


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_local_pki_is_private_names_localhost_and_is_reused(tmp_path: Path) -> None:
    pki = ensure_local_pki(tmp_path / "state" / "pki")
    assert _mode(pki.directory) == 0o700
    for key in (pki.ca_key, pki.server_key, pki.client_key):
        assert _mode(key) == 0o600
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u.dotted_string for u in eku] == ["1.3.6.1.5.5.7.3.2"]  # clientAuth

    before = pki.server_key.read_bytes()
    assert ensure_local_pki(pki.directory).server_key.read_bytes() == before  # reused
    # within 30 days of expiry (a year from now) everything is made anew
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=340)
    assert ensure_local_pki(pki.directory, now=later).server_key.read_bytes() != before


def test_local_pki_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError, match="is a symlink"):
        ensure_local_pki(tmp_path / "link")


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalPki, LocalPki]:
    return (
        ensure_local_pki(tmp_path_factory.mktemp("a") / "pki"),
        ensure_local_pki(tmp_path_factory.mktemp("b") / "pki"),
    )


def files(pki: LocalPki) -> TlsFiles:
    return TlsFiles(pki.server_cert, pki.server_key, pki.ca_cert, "--xds-tls")


def test_tls_options_come_all_three_together() -> None:
    assert TlsFiles.from_options(None, None, None, "--xds-tls") is None
    with pytest.raises(TlsConfigError) as err:
        TlsFiles.from_options("s.pem", None, None, "--xds-tls")
    assert str(err.value).startswith(
        "--xds-tls-key, --xds-tls-client-ca missing: mutual TLS needs --xds-tls-cert, "
        "--xds-tls-key and --xds-tls-client-ca together"
    )


def test_bad_tls_files_are_named_and_keys_never_quoted(
    tmp_path: Path, pkis: tuple[LocalPki, LocalPki]
) -> None:
    a, b = pkis
    key_text = a.server_key.read_text()

    def error(cert: Path, key: Path, ca: Path) -> str:
        with pytest.raises(TlsConfigError) as err:
            TlsFiles(cert, key, ca, "--xds-tls").load()
        assert key_text.splitlines()[1] not in str(err.value)
        return str(err.value)

    missing = tmp_path / "nope.pem"
    assert error(missing, a.server_key, a.ca_cert) == (
        f"--xds-tls-cert {missing}: No such file or directory"
    )
    assert error(a.server_cert, a.server_key, a.server_key) == (
        f"--xds-tls-client-ca {a.server_key}: no PEM certificate in it "
        "(expected '-----BEGIN CERTIFICATE-----')"
    )
    assert error(a.server_cert, a.ca_cert, a.ca_cert) == (
        f"--xds-tls-key {a.ca_cert}: not an unencrypted PEM private key"
    )
    assert error(a.server_cert, b.server_key, a.ca_cert) == (
        f"--xds-tls-key {b.server_key}: does not belong to the certificate in {a.server_cert}"
    )


async def _check(port: int, ca: Path, client: LocalPki | None) -> int:
    creds = grpc.ssl_channel_credentials(
        ca.read_bytes(),
        client.client_key.read_bytes() if client else None,
        client.client_cert.read_bytes() if client else None,
    )
    async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
        return int(resp.status)


@pytest.fixture
async def tls_server(
    tmp_path: Path, pkis: tuple[LocalPki, LocalPki]
) -> AsyncIterator[tuple[int, Path]]:
    """A real gRPC server with mutual TLS from copies of PKI a's files (in ``live``)."""
    a, _ = pkis
    live = tmp_path / "live"
    shutil.copytree(a.directory, live)
    server = make_server()
    add_health(server).set_all(SERVING)
    port = add_port(server, "127.0.0.1:0", files(LocalPki(live)))
    await server.start()
    try:
        yield port, live
    finally:
        await server.stop(None)


async def test_only_clients_with_a_certificate_of_the_ca_get_in(
    tls_server: tuple[int, Path], pkis: tuple[LocalPki, LocalPki]
) -> None:
    port, _ = tls_server
    a, b = pkis
    assert await _check(port, a.ca_cert, a) == SERVING
    for client in (None, b):  # no certificate; a certificate from another CA
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(port, a.ca_cert, client)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )


async def test_replaced_files_are_used_from_the_next_connection(
    tls_server: tuple[int, Path], pkis: tuple[LocalPki, LocalPki]
) -> None:
    port, live = tls_server
    a, b = pkis
    # a half-written rotation (b's key with a's certificate) is refused; a's keep serving
    shutil.copy(b.server_key, live / "xds-server-key.pem")
    assert await _check(port, a.ca_cert, a) == SERVING
    # the whole of b in place: b's clients get in, a's no longer do
    for name in ("ca.pem", "xds-server.pem", "xds-server-key.pem"):
        shutil.copy(b.directory / name, live / name)
    assert await _check(port, b.ca_cert, b) == SERVING
    with pytest.raises(grpc.aio.AioRpcError):
        await _check(port, a.ca_cert, a)


def test_a_non_loopback_xds_address_needs_mutual_tls(
    capsys: pytest.CaptureFixture[str], pkis: tuple[LocalPki, LocalPki]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--config", "g.yaml", "--xds-address", "0.0.0.0:18000"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m xds_server: error: --xds-address 0.0.0.0:18000: not a loopback address, and "
        "xDS has no authentication without mutual TLS (anyone who reaches the port could read "
        "the whole config and pose as an Envoy); give --xds-tls-cert, --xds-tls-key and "
        "--xds-tls-client-ca, or --insecure-xds to accept this explicitly"
    )
    with pytest.raises(SystemExit):
        parse_args(["--config", "g.yaml", "--xds-address", "10.1.2.3:18000", "--xds-tls-cert", "x"])
    assert "--xds-tls-key, --xds-tls-client-ca missing" in capsys.readouterr().err

    insecure = parse_args(["--config", "g.yaml", "--xds-address", "[::]:1", "--insecure-xds"])
    assert insecure.insecure_xds
    a, _ = pkis
    tls = ["--xds-tls-cert", str(a.server_cert), "--xds-tls-key", str(a.server_key)]
    tls += ["--xds-tls-client-ca", str(a.ca_cert)]
    assert parse_args(["--config", "g.yaml", "--xds-address", "0.0.0.0:1", *tls]).xds_tls()
    for loopback in ("127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "localhost:1"):
        assert parse_args(["--config", "g.yaml", "--xds-address", loopback])


def test_the_documented_transport_socket_is_the_one_meshgate_renders() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    block = next(
        b for b in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL) if "transport_sockets.tls" in b
    )
    documented = yaml.safe_load(block)["transport_socket"]
    tls = XdsTls(
        cert="/etc/envoy/tls/envoy-client.pem",
        key="/etc/envoy/tls/envoy-client-key.pem",
        ca="/etc/envoy/tls/xds-ca.pem",
        server_name="xds.example.internal",
    )
    assert documented == xds_tls_transport_socket(tls)


def test_the_canary_bootstrap_reaches_the_control_plane_over_its_socket() -> None:
    params = BootstrapParams(node_id="c", xds_port=0, admin_port=1, xds_pipe="/run/x/canary.sock")
    cluster = yaml.safe_load(render_bootstrap(params))["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/run/x/canary.sock"}}
    assert "transport_socket" not in cluster
