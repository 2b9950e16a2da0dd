"""The last good key set of each issuer, on disk, so a restart with the IdP down still serves.

One file per (issuer, source fingerprint) in the control plane's state directory
(``<state-dir>/jwks``, mode 0700; files 0600). A file is written whole or not at all: a
temporary file in the same directory, fsynced, renamed over the old one, then the directory
fsynced, so a crash or a full disk leaves the previous file intact. Each file carries a
SHA-256 of its content: a truncated or edited file is ignored at start with a warning (and
its document is validated again like a fetched one), so a corrupt cache can cost a fetch,
never a wrong key. The checksum finds corruption, not an attacker: whoever can write as the
control plane's user can also change its config.

Keys are public keys (private and symmetric ones never pass validation), so the cache holds
nothing secret; it is private anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshgate.redact import escape
from xds_server.jwks.document import JwksError, KeySet, parse_jwks

log = logging.getLogger("meshgate.jwks")

FORMAT = 1
#: Larger than any valid entry (a document is at most 512 KiB, escaped at most ~6x in JSON).
MAX_ENTRY_BYTES = 4 * 1024 * 1024
_TMP_PREFIX = ".tmp-"


class StoreError(OSError):
    """The cache directory or a file in it cannot be written."""


@dataclass(frozen=True)
class StoredKeys:
    """A good key set as fetched: whose, from where, when, and how long it may serve."""

    issuer: str
    fingerprint: str
    keys: KeySet
    #: Unix time of the fetch that returned it (the last fetch that confirmed it).
    fetched_at: float
    #: ``max_stale`` in force when it was fetched: before the config is compiled at start,
    #: this is what bounds the use of a key set read back from disk.
    max_stale: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.max_stale


def entry_name(issuer: str, fingerprint: str) -> str:
    """The file name of an entry: a hash, so no issuer or URL text becomes a path."""
    digest = hashlib.sha256(f"{issuer}\n{fingerprint}".encode()).hexdigest()[:32]
    return f"{digest}.json"


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode(entry: StoredKeys) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "issuer": entry.issuer,
        "fingerprint": entry.fingerprint,
        "fetched_at": entry.fetched_at,
        "max_stale": entry.max_stale,
        "document": entry.keys.document,
    }
    return json.dumps({**body, "sha256": _checksum(body)}, indent=1).encode()


def decode(data: bytes, name: str) -> StoredKeys:
    """An entry read back; ValueError saying why it cannot be trusted."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON (truncated?): {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("not a cache entry")
    if raw.get("format") != FORMAT:
        raise ValueError(f"unknown format {escape(str(raw.get('format')))}")
    claimed = raw.pop("sha256", None)
    if claimed != _checksum(raw):
        raise ValueError("checksum mismatch: the file was changed or damaged")
    issuer, fingerprint = raw.get("issuer"), raw.get("fingerprint")
    fetched_at, max_stale = raw.get("fetched_at"), raw.get("max_stale")
    document = raw.get("document")
    if not (isinstance(issuer, str) and isinstance(fingerprint, str)):
        raise ValueError("issuer or fingerprint missing")
    if entry_name(issuer, fingerprint) != name:
        raise ValueError("the file name does not match its issuer and source (moved?)")
    if not (isinstance(fetched_at, int | float) and isinstance(max_stale, int | float)):
        raise ValueError("fetch time or max_stale missing")
    if not isinstance(document, str):
        raise ValueError("document missing")
    try:
        keys = parse_jwks(document)
    except JwksError as exc:
        raise ValueError(f"the stored keys are not a valid JWKS: {exc}") from None
    if keys.document != document:
        raise ValueError("the stored document is not in normal form (edited?)")
    return StoredKeys(issuer, fingerprint, keys, float(fetched_at), float(max_stale))


class KeyStore:
    """The cache directory; ``None`` keeps keys in memory only."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        #: Why the directory cannot be used (status shows it); None when it works.
        self.error: str | None = None

    def _ready(self) -> Path:
        """The directory, created 0700 if needed; StoreError if it is not ours to use."""
        if self.directory is None:
            raise StoreError("no cache directory")
        d = self.directory
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(d)
        except OSError as exc:
            raise StoreError(f"cannot create {d}: {exc.strerror or exc}") from None
        if d.is_symlink():
            raise StoreError(f"{d} is a symlink; give a real directory")
        if st.st_uid != os.getuid():
            raise StoreError(f"{d} is owned by uid {st.st_uid}, not by this user")
        if st.st_mode & 0o077:
            with contextlib.suppress(OSError):
                os.chmod(d, 0o700)
        return d

    def load(self) -> list[StoredKeys]:
        """Every trustworthy entry; bad ones are skipped with a warning, never raised."""
        if self.directory is None or not self.directory.exists():
            return []
        try:
            d = self._ready()
            names = sorted(os.listdir(d))
        except OSError as exc:
            self.error = str(exc)
            log.error("cannot read the JWKS cache", extra={"fields": {"error": str(exc)}})
            return []
        out: list[StoredKeys] = []
        for name in names:
            path = d / name
            if name.startswith(_TMP_PREFIX):
                _sweep(path)
                continue
            if not name.endswith(".json"):
                continue
            try:
                data = _read_bounded(path)
                out.append(decode(data, name))
            except (OSError, ValueError) as exc:
                log.warning(
                    "JWKS cache file ignored",
                    extra={"fields": {"file": str(path), "reason": str(exc)}},
                )
        return out

    def save(self, entry: StoredKeys) -> None:
        """Write ``entry`` atomically (StoreError on failure; the old file then stays)."""
        try:
            d = self._ready()
            _atomic_write(d, entry_name(entry.issuer, entry.fingerprint), encode(entry))
        except StoreError as exc:
            self.error = str(exc)
            raise
        except OSError as exc:
            self.error = f"cannot write to {self.directory}: {exc.strerror or exc}"
            raise StoreError(self.error) from None
        self.error = None

    def remove(self, issuer: str, fingerprint: str) -> None:
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / entry_name(issuer, fingerprint)).unlink()


def _sweep(path: Path) -> None:
    """Remove a temporary file left by a write cut short (a crash); one younger than a
    minute may be another control plane's write in progress."""
    with contextlib.suppress(OSError):
        if time.time() - os.lstat(path).st_mtime > 60:
            path.unlink()


def _read_bounded(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):
            raise ValueError("not a regular file")
        if st.st_size > MAX_ENTRY_BYTES:
            raise ValueError(f"{st.st_size} bytes, more than a cache entry can be")
        return os.read(fd, MAX_ENTRY_BYTES + 1)
    finally:
        os.close(fd)


def _atomic_write(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / f"{_TMP_PREFIX}{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
