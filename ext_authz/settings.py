"""The ext_authz service's settings and its command line (``python -m ext_authz --help``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ext_authz.stores.redis_store import redact
from meshgate.runtime.help_format import DefaultsHelpFormatter
from meshgate.runtime.settings import (
    ServiceSettings,
    add_common_arguments,
    common_from_args,
    default_state_dir,
    split_address,
)

DEFAULT_LISTEN = "127.0.0.1:18090"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:18091"


def default_store() -> str:
    return str(default_state_dir() / "ext_authz" / "keys.db")


def default_hash_key_file() -> str:
    return str(default_state_dir() / "ext_authz" / "key-hash.key")


@dataclass
class Settings(ServiceSettings):
    admin_address: str = field(default=DEFAULT_ADMIN_ADDRESS, kw_only=True)
    #: HOST:PORT of the HTTP ext_authz protocol Envoy calls.
    listen: str = DEFAULT_LISTEN
    #: A SQLite file path, or a ``redis://`` URL (may hold a password: never log it as is).
    store: str = field(default_factory=default_store)
    hash_key_file: str = field(default_factory=default_hash_key_file)
    #: Seconds between full reloads of every key from the store.
    resync_interval: float = 30.0
    #: Seconds between writes of the keys' last use to the store.
    last_use_flush: float = 5.0
    #: Seconds between SQLite change checks (``PRAGMA data_version``).
    poll_interval: float = 0.25
    #: A file whose one line is the bearer token of the /v1/keys admin routes; None: the
    #: routes are not mounted at all. The path may be logged, the token never.
    admin_token_file: str | None = None

    def store_name(self) -> str:
        """The store as logs may name it (a Redis password hidden)."""
        return redact(self.store)

    def check(self) -> None:
        split_address(self.listen)
        for name, value in (
            ("--resync-interval", self.resync_interval),
            ("--last-use-flush", self.last_use_flush),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be more than 0 seconds, got {value:g}")


def _seconds(text: str) -> float:
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ext_authz",
        description="meshgate API key service (Envoy HTTP ext_authz)",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="HTTP ext_authz checks (Envoy's ext_authz cluster points here)",
    )
    add_common_arguments(p, admin_address=DEFAULT_ADMIN_ADDRESS)
    p.add_argument(
        "--store",
        default=None,
        metavar="PATH|URL",
        help=f"the key store: a SQLite file, or a redis:// URL shared by replicas "
        f"(default: {default_store()})",
    )
    p.add_argument(
        "--hash-key-file",
        default=None,
        metavar="FILE",
        help="the secret the stored key hashes are keyed with; created when missing, and "
        f"shared by every replica (default: {default_hash_key_file()})",
    )
    p.add_argument(
        "--resync-interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds between full reloads of the keys (catches any change notice missed)",
    )
    p.add_argument(
        "--last-use-flush",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds between writes of the keys' last use to the store",
    )
    p.add_argument(
        "--admin-token-file",
        default=None,
        metavar="FILE",
        help="a secret file whose one line is the admin token: mounts the key API "
        "(/v1/keys: list, create, rotate, revoke) on the admin address, every call with "
        "'Authorization: Bearer <token>'. Without it /v1/keys is not served at all (404); "
        "/healthz /readyz /metrics stay open either way",
    )
    return p


def parse_args(argv: list[str] | None = None) -> Settings:
    p = build_parser()
    a = p.parse_args(argv)
    settings = Settings(
        **common_from_args(a),
        listen=a.listen,
        store=a.store or default_store(),
        hash_key_file=a.hash_key_file or default_hash_key_file(),
        resync_interval=a.resync_interval,
        last_use_flush=a.last_use_flush,
        admin_token_file=a.admin_token_file,
    )
    try:
        settings.check()
    except ValueError as exc:
        p.error(str(exc))
    return settings
