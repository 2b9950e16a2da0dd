"""One ``--store`` value to a key store: a ``redis://`` (``rediss://``, ``unix://``) URL opens
Redis, anything else is the path of a SQLite file. Shared by the service and (later) the CLI."""

from __future__ import annotations

from pathlib import Path

from ext_authz.stores.base import KeyStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis(spec: str) -> bool:
    return spec.lower().startswith(REDIS_SCHEMES)


def open_store(spec: str | Path) -> KeyStore:
    """The store ``spec`` names, opened (KeyStoreError when it cannot be)."""
    text = str(spec)
    if is_redis(text):
        from ext_authz.stores.redis_store import RedisKeyStore

        return RedisKeyStore(text)
    from ext_authz.stores.sqlite import SqliteKeyStore

    return SqliteKeyStore(Path(text))
