"""A key store in Redis, shared by every replica of the service.

Layout under a prefix (default ``meshgate:keys:``):

- ``<prefix>rec:<key_id>``: one hash per record (absent fields are None; floats as ``repr``)
- ``<prefix>ids``: the set of every key id
- ``<prefix>change_count``: a counter, INCR'd once per changed record
- ``<prefix>changes``: a pub/sub channel; every change PUBLISHes the changed key id

Every write is one Lua script, so it is atomic, and it publishes and counts in the same
script: a replica that refreshes one record per message and, on its periodic full resync,
finds the counter moved by more than the messages it saw, knows it missed some.

``touch`` (last use) is deliberately neither published nor counted: it does not change whether
a key is valid, and counting it would make every replica's batched flush look like a missed
change to every other replica.

Durability is Redis's own (RDB/AOF as its operator configured it); a write is acknowledged
when Redis has applied it.
"""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis

from ext_authz.keys.record import KeyRecord
from ext_authz.stores.base import KeyConflict, KeyStoreError, UnknownKey

DEFAULT_PREFIX = "meshgate:keys:"

_OK, _UNKNOWN, _EXISTS, _ROTATED = 1, 0, -1, -2

# KEYS: record, ids, counter; ARGV: channel, key_id, field, value, ...
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS: record, counter; ARGV: channel, key_id, at
_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 1 end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS: old record, new record, ids, counter
# ARGV: channel, old_id, new_id, old_expires_at, field, value, ... (the new record)
# The old expiry is written back as the string it was (existing or given), never re-formatted
# by Lua (whose tostring keeps only 14 digits).
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('HEXISTS', KEYS[1], 'replaced_by') == 1 then return -2 end
local expires = ARGV[4]
local existing = redis.call('HGET', KEYS[1], 'expires_at')
if existing and tonumber(existing) <= tonumber(expires) then expires = existing end
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], 'expires_at', expires, 'replaced_by', ARGV[3])
redis.call('INCRBY', KEYS[4], 2)
redis.call('PUBLISH', ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS: records; ARGV: times (same order). A missing key is skipped, never created.
_TOUCH = """
for i, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then
    local cur = redis.call('HGET', k, 'last_used_at')
    if not cur or tonumber(cur) < tonumber(ARGV[i]) then
      redis.call('HSET', k, 'last_used_at', ARGV[i])
    end
  end
end
return 1
"""


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (``redis://user:***@host``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable redis url>"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _where(url: str) -> str:
    """``redis://[user:***@]host:port/db`` as the error messages name the store."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 6379
        user = parts.username
        password = parts.password
    except ValueError:
        return redact(url)
    if ":" in host:
        host = f"[{host}]"
    db = parts.path.lstrip("/") or "0"
    auth = f"{user or ''}:***@" if password is not None else (f"{user}@" if user else "")
    return f"{parts.scheme}://{auth}{host}:{port}/{db}"


def _fields(r: KeyRecord) -> list[str]:
    values: dict[str, str | None] = {
        "key_id": r.key_id,
        "name": r.name,
        "tenant": r.tenant,
        "scopes": json.dumps(list(r.scopes)),
        "digest": r.digest,
        "created_at": repr(float(r.created_at)),
        "expires_at": None if r.expires_at is None else repr(float(r.expires_at)),
        "revoked_at": None if r.revoked_at is None else repr(float(r.revoked_at)),
        "replaced_by": r.replaced_by,
        "last_used_at": None if r.last_used_at is None else repr(float(r.last_used_at)),
    }
    out: list[str] = []
    for k, v in values.items():
        if v is not None:
            out += [k, v]
    return out


def _opt_float(h: dict[str, str], name: str) -> float | None:
    v = h.get(name)
    return None if v is None else float(v)


def _record(h: dict[str, str]) -> KeyRecord:
    return KeyRecord(
        key_id=h["key_id"],
        name=h["name"],
        tenant=h["tenant"],
        scopes=tuple(json.loads(h["scopes"])),
        digest=h["digest"],
        created_at=float(h["created_at"]),
        expires_at=_opt_float(h, "expires_at"),
        revoked_at=_opt_float(h, "revoked_at"),
        replaced_by=h.get("replaced_by"),
        last_used_at=_opt_float(h, "last_used_at"),
    )


class RedisKeyStore:
    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
    ) -> None:
        self.url = redact(url)
        self.prefix = prefix
        self._where = _where(url)
        try:
            self._password = urlsplit(url).password
        except ValueError:
            self._password = None
        try:
            self._r: redis.Redis = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        except ValueError as exc:
            raise KeyStoreError(
                f"key store {self._where}: not a redis URL: {self._scrub(str(exc))}"
            ) from None
        self._add = self._r.register_script(_ADD)
        self._revoke = self._r.register_script(_REVOKE)
        self._rotate = self._r.register_script(_ROTATE)
        self._touch = self._r.register_script(_TOUCH)
        self._call("open it", self._r.ping)

    def __repr__(self) -> str:
        return f"RedisKeyStore({self.url!r}, prefix={self.prefix!r})"

    @property
    def changes_channel(self) -> str:
        """The pub/sub channel every change publishes the changed key id on."""
        return f"{self.prefix}changes"

    def _rec(self, key_id: str) -> str:
        return f"{self.prefix}rec:{key_id}"

    @property
    def _ids(self) -> str:
        return f"{self.prefix}ids"

    @property
    def _counter(self) -> str:
        return f"{self.prefix}change_count"

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.AuthenticationError as exc:  # a ConnectionError subclass in redis-py
            why = self._scrub(str(exc) or type(exc).__name__)
            raise KeyStoreError(f"key store {self._where}: cannot log in: {why}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            why = self._scrub(str(exc) or type(exc).__name__)
            raise KeyStoreError(f"key store {self._where}: cannot reach it: {why}") from None
        except redis.RedisError as exc:
            why = self._scrub(str(exc) or type(exc).__name__)
            raise KeyStoreError(f"key store {self._where}: cannot {doing}: {why}") from None

    def subscribe(self) -> Any:
        """A ``redis.client.PubSub`` subscribed to :attr:`changes_channel` (one connection of
        its own); read it with ``get_message``, close it when done. KeyStoreError when Redis
        cannot be reached."""

        def sub() -> Any:
            pubsub = self._r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.changes_channel)
            except BaseException:
                pubsub.close()
                raise
            return pubsub

        return self._call("subscribe to changes", sub)

    def change_count(self) -> int:
        """How many record changes this store has published, ever (0 for a new store)."""
        value = self._call("read the change count", self._r.get, self._counter)
        return 0 if value is None else int(value)

    def add(self, record: KeyRecord) -> None:
        status = self._call(
            "add a key",
            self._add,
            keys=[self._rec(record.key_id), self._ids, self._counter],
            args=[self.changes_channel, record.key_id, *_fields(record)],
        )
        if status == _EXISTS:
            raise KeyConflict(f"key store {self._where}: key id {record.key_id} exists")

    def get(self, key_id: str) -> KeyRecord | None:
        h = self._call("read a key", self._r.hgetall, self._rec(key_id))
        return _record(h) if h else None

    def all(self) -> list[KeyRecord]:
        def read() -> list[dict[str, str]]:
            ids: list[str] = sorted(cast("set[str]", self._r.smembers(self._ids)))
            pipe = self._r.pipeline(transaction=True)
            for kid in ids:
                pipe.hgetall(self._rec(kid))
            return list(pipe.execute())

        hashes = self._call("read the keys", read)
        records = [_record(h) for h in hashes if h]
        records.sort(key=lambda r: r.key_id)
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        status = self._call(
            "revoke a key",
            self._revoke,
            keys=[self._rec(key_id), self._counter],
            args=[self.changes_channel, key_id, repr(float(at))],
        )
        if status == _UNKNOWN:
            raise UnknownKey(key_id)
        record = self.get(key_id)
        if record is None:
            raise UnknownKey(key_id)
        return record

    def rotated(self, old_id: str, new: KeyRecord, old_expires_at: float) -> KeyRecord:
        """As the protocol says; besides, a key already rotated is refused (so of two
        concurrent rotations of one key exactly one succeeds): rotate its replacement."""
        status = self._call(
            "rotate a key",
            self._rotate,
            keys=[self._rec(old_id), self._rec(new.key_id), self._ids, self._counter],
            args=[
                self.changes_channel,
                old_id,
                new.key_id,
                repr(float(old_expires_at)),
                *_fields(new),
            ],
        )
        if status == _UNKNOWN:
            raise UnknownKey(old_id)
        if status == _EXISTS:
            raise KeyConflict(f"key store {self._where}: key id {new.key_id} exists")
        if status == _ROTATED:
            current = self.get(old_id)
            by = current.replaced_by if current is not None else "?"
            raise KeyConflict(
                f"key {old_id} was already rotated (replaced by {by}); rotate {by} instead"
            )
        record = self.get(old_id)
        if record is None:
            raise UnknownKey(old_id)
        return record

    def touch(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        items = list(last_used.items())
        self._call(
            "record last use",
            self._touch,
            keys=[self._rec(k) for k, _ in items],
            args=[repr(float(t)) for _, t in items],
        )

    def close(self) -> None:
        self._r.close()
