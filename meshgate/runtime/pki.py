"""A local certificate authority for mutual TLS between meshgate's own processes.

``meshgate up --xds-tls auto`` needs a CA, a server certificate for the control plane and a
client certificate for Envoy without asking the operator for any. They are made once with the
``cryptography`` package (EC P-256: small, fast, accepted by Envoy's BoringSSL and gRPC) and
kept in a private directory (0700, private keys 0600), then reused while they are valid for
at least :data:`RENEW_BEFORE` more and still name what is asked for; otherwise all of it is made
anew (only meshgate's own processes trust this CA, so replacing it costs nothing).
Production deployments bring their own CA (docs/operations.md); this is for one machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
LEAF_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


class PkiError(OSError):
    """The PKI directory cannot be used safely (wrong owner, a symlink, not writable)."""


@dataclass(frozen=True)
class LocalPki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "xds-server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "xds-server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "envoy-client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "envoy-client-key.pem"


def default_pki_dir() -> Path:
    """``$XDG_STATE_HOME/meshgate/pki``, by default ``~/.local/state/meshgate/pki``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meshgate" / "pki"


def ensure_local_pki(
    directory: Path,
    server_names: Sequence[str] = ("localhost",),
    server_ips: Sequence[str] = ("127.0.0.1",),
    client_name: str = "meshgate-envoy",
    now: datetime.datetime | None = None,
) -> LocalPki:
    """The CA and certificates in ``directory``: reused when still good, made anew otherwise."""
    now = now or datetime.datetime.now(datetime.UTC)
    pki = LocalPki(_private_dir(directory))
    if not _still_good(pki, server_names, server_ips, now):
        _issue(pki, server_names, server_ips, client_name, now)
    return pki


def _private_dir(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(directory)
    if directory.is_symlink():
        raise PkiError(f"{directory}: is a symlink; give a real directory for the keys")
    if st.st_uid != os.getuid():
        raise PkiError(f"{directory}: owned by uid {st.st_uid}, not by us (uid {os.getuid()})")
    os.chmod(directory, 0o700)
    return directory


def _still_good(
    pki: LocalPki, names: Sequence[str], ips: Sequence[str], now: datetime.datetime
) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
        keys = [pki.ca_key, pki.server_key, pki.client_key]
        if not all(k.is_file() for k in keys):
            return False
        for cert in (server, client):
            cert.verify_directly_issued_by(ca)
        for cert in (ca, server, client):
            if cert.not_valid_after_utc - RENEW_BEFORE < now or cert.not_valid_before_utc > now:
                return False
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have_names = set(san.get_values_for_type(x509.DNSName))
        have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        return set(names) <= have_names and set(ips) <= have_ips
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False


def _issue(
    pki: LocalPki,
    names: Sequence[str],
    ips: Sequence[str],
    client_name: str,
    now: datetime.datetime,
) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshgate local CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    server_key, server = _leaf(ca, ca_key, "meshgate xds server", sans, True, now)
    client_key, client = _leaf(ca, ca_key, client_name, [], False, now)
    _write(pki.ca_key, _key_pem(ca_key), 0o600)
    _write(pki.server_key, _key_pem(server_key), 0o600)
    _write(pki.client_key, _key_pem(client_key), 0o600)
    _write(pki.ca_cert, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.server_cert, server.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.client_cert, client.public_bytes(serialization.Encoding.PEM), 0o644)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # a little in the past: a clock a few seconds behind must not see "not yet valid"
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    sans: list[x509.GeneralName],
    server: bool,
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(name, ca.subject, key.public_key(), now, LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, created with ``mode`` from the start (a key is never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
