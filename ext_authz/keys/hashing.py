"""The keyed hash that is all a store ever holds of a key.

HMAC-SHA256 under a server-side hash key ("pepper"): API keys carry ~190 bits of entropy, so
a fast keyed hash cannot be brute-forced, while a password hash (bcrypt, argon2) would cost
milliseconds per request and cap the service's throughput. The hash key means a stolen
database alone does not even allow checking a guessed key. Comparison is constant-time.

Every replica that shares a store must share the hash key (a secret file, mounted alike).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from meshgate.files import os_problem

HASH_KEY_BYTES = 32


class HashKeyError(RuntimeError):
    """The hash key file is missing, unreadable or too short; the message names the file."""


class KeyHasher:
    def __init__(self, hash_key: bytes) -> None:
        if len(hash_key) < HASH_KEY_BYTES:
            raise HashKeyError(f"the key-hash key is {len(hash_key)} bytes, at least 32 needed")
        self._key = hash_key

    def __repr__(self) -> str:
        return "KeyHasher(<hash key hidden>)"

    def digest(self, key_text: str) -> str:
        return hmac.new(self._key, key_text.encode("ascii"), hashlib.sha256).hexdigest()

    def matches(self, key_text: str, stored: str) -> bool:
        return hmac.compare_digest(self.digest(key_text), stored)


def load_or_create_hash_key(path: Path, create: bool = True) -> KeyHasher:
    """The hasher for the hash key in ``path`` (hex, one line). Created (0600, atomically)
    when missing and ``create``; the embedded default keeps it beside the key database."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise HashKeyError(f"{path}: no key-hash key file") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(HASH_KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another process created meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        text = path.read_text().strip()
    except OSError as exc:
        raise HashKeyError(f"{path}: {os_problem(exc, 'read')}") from None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise HashKeyError(f"{path}: the key-hash key is not hex") from None
    try:
        return KeyHasher(raw)
    except HashKeyError as exc:
        raise HashKeyError(f"{path}: {exc}") from None
