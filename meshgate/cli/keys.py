"""``meshgate keys create|rotate|revoke|list``: the API key lifecycle from the command line.

The key is printed once, by ``create`` and ``rotate``, and never again: the store holds only
its keyed hash. Everything else (``list``, errors) names keys by their public key id.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ext_authz.keys.format import key_id_argument
from ext_authz.keys.hashing import HashKeyError, load_or_create_hash_key
from ext_authz.keys.lifecycle import DEFAULT_GRACE, Issued, KeyBook
from ext_authz.keys.record import KeyInputError, KeyRecord, parse_duration
from ext_authz.settings import default_hash_key_file, default_store
from ext_authz.stores.base import KeyStoreError, UnknownKey
from ext_authz.stores.open import open_store


def add_keys_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    k = command("keys", "create, rotate, revoke and list API keys (the key is shown once)")
    k.add_argument(
        "--store",
        metavar="PATH|URL",
        default=None,
        help="the key store: a SQLite file, or a redis:// URL shared by replicas "
        f"(default: {default_store()})",
    )
    k.add_argument(
        "--hash-key-file",
        type=Path,
        default=None,
        help="the secret the stored key hashes are keyed with; created when missing, and "
        f"shared by every replica (default: {default_hash_key_file()})",
    )
    k.add_argument("--json", action="store_true", help="print JSON (default: text)")
    ops = k.add_subparsers(dest="keys_command", metavar="OPERATION", required=True)
    c = ops.add_parser("create", help="issue a key; prints it once")
    c.add_argument("--name", required=True, help="what the key is for (shown by list)")
    c.add_argument("--tenant", required=True, help="the tenant the key acts for")
    c.add_argument("--scopes", default="", help="comma-separated scopes, like orders:read,a")
    c.add_argument("--expires", default=None, help="lifetime like 90d, 12h (default: never)")
    r = ops.add_parser("rotate", help="issue a successor; the old key stays valid for a grace")
    r.add_argument("key_id", help="the key id (from list), never the key itself")
    r.add_argument("--grace", default=None, help="how long the old key stays valid (default 1d)")
    v = ops.add_parser("revoke", help="end a key now")
    v.add_argument("key_id", help="the key id (from list), never the key itself")
    ops.add_parser("list", help="every key's metadata and last use; never a secret")
    k.set_defaults(func=run_keys)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(r: KeyRecord, now: float) -> str:
    return (
        f"{r.key_id}  {r.state(now):8}  tenant={r.tenant}  name={r.name!r}  "
        f"scopes={','.join(r.scopes) or '-'}  created={_when(r.created_at)}  "
        f"expires={_when(r.expires_at)}  last_used={_when(r.last_used_at)}"
        + (f"  replaced_by={r.replaced_by}" if r.replaced_by else "")
    )


def _issued(i: Issued, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"key": i.text, **i.record.public()}))
        return
    print(i.text)
    print(
        f"key id {i.record.key_id}: the key above is shown once; store it now "
        "(only its keyed hash is kept)",
        file=sys.stderr,
    )


def _key_id(text: str) -> str:
    try:
        return key_id_argument(text, "`meshgate keys list`")
    except ValueError as exc:
        raise KeyInputError(str(exc)) from None


def run_keys(a: argparse.Namespace) -> int:
    try:
        hasher = load_or_create_hash_key(a.hash_key_file or Path(default_hash_key_file()))
        store = open_store(a.store or default_store())
    except (HashKeyError, KeyStoreError) as exc:
        print(f"meshgate keys: {exc}", file=sys.stderr)
        return 1
    book = KeyBook(store, hasher)
    try:
        return _run(a, book)
    except (KeyInputError, KeyStoreError) as exc:
        print(f"meshgate keys {a.keys_command}: {exc}", file=sys.stderr)
        return 1
    except UnknownKey as exc:
        print(f"meshgate keys {a.keys_command}: no key with id {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _run(a: argparse.Namespace, book: KeyBook) -> int:
    now = book.now()
    if a.keys_command == "create":
        scopes = tuple(s.strip() for s in a.scopes.split(",") if s.strip())
        ttl = None if a.expires is None else parse_duration(a.expires, "--expires")
        _issued(book.create(a.name, a.tenant, scopes, ttl), a.json)
    elif a.keys_command == "rotate":
        grace = DEFAULT_GRACE if a.grace is None else parse_duration(a.grace, "--grace")
        issued, old = book.rotate(_key_id(a.key_id), grace)
        _issued(issued, a.json)
        print(
            f"key id {old.key_id} stays valid until {_when(old.expires_at)}, then ends",
            file=sys.stderr,
        )
    elif a.keys_command == "revoke":
        r = book.revoke(_key_id(a.key_id))
        print(json.dumps(r.public()) if a.json else f"revoked {r.key_id} at {_when(r.revoked_at)}")
    else:
        records = book.list()
        if a.json:
            print(json.dumps([r.public() for r in records], indent=2))
        elif not records:
            print("no keys", file=sys.stderr)
        else:
            for r in records:
                print(_describe(r, now))
    return 0
