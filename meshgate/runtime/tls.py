"""Mutual TLS for a gRPC server from PEM files: checked at start, re-read when they change.

A service that listens beyond loopback must know who is calling. Here that is a client
certificate signed by a CA the operator names (``--…-tls-client-ca``); the server presents its
own certificate and key. All three files are checked before the port opens, with one precise
error per problem (which flag, which file, what is wrong), and never with key material in it.

Rotation: gRPC asks :class:`_Reloader` for the current files at every TLS handshake. It compares
the files' identity (inode, size, mtime) with the loaded ones, which costs three ``stat`` calls
per new connection (Envoys connect once and keep the stream), and re-reads only on change. A
changed set that does not check out (e.g. the new key written before the new certificate) is
logged and the previous set keeps serving until the files agree again.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("meshgate.tls")


class TlsConfigError(ValueError):
    """A TLS option or file that cannot be used; the message names the flag and the file."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path
    #: The flag prefix the files came from, for error messages (e.g. ``--xds-tls``).
    flag: str = "--tls"

    @classmethod
    def from_options(
        cls, cert: str | None, key: str | None, client_ca: str | None, flag: str
    ) -> TlsFiles | None:
        """None when no option is given; all three or a :class:`TlsConfigError`."""
        given = {"cert": cert, "key": key, "client-ca": client_ca}
        if not any(given.values()):
            return None
        missing = [f"{flag}-{name}" for name, value in given.items() if not value]
        if missing:
            raise TlsConfigError(
                f"{', '.join(missing)} missing: mutual TLS needs {flag}-cert, {flag}-key and "
                f"{flag}-client-ca together (the server's certificate and key, and the CA that "
                "signs the clients' certificates)"
            )
        assert cert and key and client_ca
        return cls(Path(cert), Path(key), Path(client_ca), flag)

    def load(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, key, client CA) as PEM, checked; raises TlsConfigError."""
        chain = self._read(self.cert, "cert")
        key = self._read(self.key, "key")
        ca = self._read(self.client_ca, "client-ca")
        certs = self._certs(chain, self.cert, "cert")
        self._certs(ca, self.client_ca, "client-ca")
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            reason = "encrypted keys are not supported" if "encrypted" in str(exc) else ""
            raise TlsConfigError(
                f"{self.flag}-key {self.key}: not an unencrypted PEM private key"
                + (f" ({reason})" if reason else "")
            ) from None
        leaf_public = (
            certs[0]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        key_public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if leaf_public != key_public:
            raise TlsConfigError(
                f"{self.flag}-key {self.key}: does not belong to the certificate in {self.cert}"
            )
        mode = os.stat(self.key).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "private key file is readable by other users; chmod 600 it",
                extra={"fields": {"file": str(self.key), "mode": oct(stat.S_IMODE(mode))}},
            )
        return chain, key, ca

    def identity(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when a file is replaced or rewritten (inode, size, mtime)."""
        out = []
        for path in (self.cert, self.key, self.client_ca):
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _read(self, path: Path, name: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise TlsConfigError(f"{self.flag}-{name} {path}: {exc.strerror}") from None

    def _certs(self, pem: bytes, path: Path, name: str) -> list[x509.Certificate]:
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise TlsConfigError(
                f"{self.flag}-{name} {path}: no PEM certificate in it "
                "(expected '-----BEGIN CERTIFICATE-----')"
            ) from None
        return certs


class _Reloader:
    """gRPC's certificate-configuration fetcher: new files at the next handshake."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.loaded = files.identity()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            now = self.files.identity()
            if now == self.loaded:
                return None
            chain, key, ca = self.files.load()
        except (OSError, TlsConfigError) as exc:
            log.error(
                "TLS files changed but cannot be used; the previous ones keep serving",
                extra={"fields": {"error": str(exc)}},
            )
            return None
        self.loaded = now
        log.info(
            "TLS files reloaded",
            extra={
                "fields": {"cert": str(self.files.cert), "client_ca": str(self.files.client_ca)}
            },
        )
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Mutual TLS: clients must present a certificate that ``files.client_ca`` signed."""
    chain, key, ca = files.load()
    initial = grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)
    return grpc.dynamic_ssl_server_credentials(
        initial, _Reloader(files), require_client_authentication=True
    )
