"""``meshgate status`` on signing keys: each issuer's state, and exit 2 when one has none."""

from __future__ import annotations

from typing import Any

from meshgate.cli.main import format_status, unhealthy
from meshgate.cli.status_jwks import format_jwks

NOW = 1_000_000.0


def issuer(name: str, state: str, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "issuer": name,
        "source": f"url https://{name}.example/jwks",
        "state": state,
        "stale_since": None,
        "keys": 0,
        "kids": [],
        "fetched_at": None,
        "expires_at": None,
        "last_error": None,
        "next_fetch": NOW + 30,
        "max_stale": 86400.0,
    }
    return {**base, **more}


STATUS: dict[str, Any] = {
    "config": {"source": "gw.yaml", "errors": []},
    "envoys": [],
    "jwks": {
        "cache": {"directory": "/var/lib/meshgate/jwks", "error": None},
        "issuers": [
            issuer("corp", "fresh", keys=2, kids=["k1", "k2"], fetched_at=NOW - 12),
            issuer(
                "partners",
                "stale",
                keys=1,
                kids=["p1"],
                fetched_at=NOW - 7200,
                stale_since=NOW - 600,
                expires_at=NOW + 79200,
                last_error="cannot connect: [Errno 111] Connection refused",
            ),
            issuer("legacy", "expired", fetched_at=NOW - 90000, last_error="HTTP 503"),
            issuer("new", "never_fetched", last_error="no complete answer within 5s"),
        ],
        "pending": False,
    },
}


def test_each_issuer_gets_a_line_saying_whether_its_tokens_can_pass() -> None:
    assert format_jwks(STATUS, NOW) == [
        "signing keys (JWKS)",
        "  corp      fresh          2 keys (k1, k2); fetched 12s ago; next fetch in 30s; "
        "url https://corp.example/jwks",
        "  partners  STALE          1 key (p1); fetched 2.0h ago; fetches fail since 10m ago; "
        "the last good keys serve, and expire in 22.0h; last error: cannot connect: [Errno 111] "
        "Connection refused; next try in 30s; url https://partners.example/jwks",
        "  legacy    EXPIRED        no keys: its tokens are refused (401); the last good keys were "
        "fetched 25.0h ago, longer ago than max_stale (24.0h); last error: HTTP 503; next try "
        "in 30s; url https://legacy.example/jwks",
        "  new       NEVER FETCHED  no keys: its tokens are refused (401); last error: no complete "
        "answer within 5s; next try in 30s; url https://new.example/jwks",
    ]


def test_an_issuer_without_keys_makes_status_exit_2_and_stale_does_not() -> None:
    assert unhealthy(STATUS)
    ok = {**STATUS, "jwks": {**STATUS["jwks"], "issuers": STATUS["jwks"]["issuers"][:2]}}
    assert not unhealthy(ok)


def test_an_unwritable_cache_and_keys_held_back_by_a_rejected_config_are_said() -> None:
    status = {
        "config": {"source": "gw.yaml", "errors": [{"message": "bad"}]},
        "jwks": {
            "cache": {"directory": "/ro/jwks", "error": "cannot create /ro/jwks: Read-only"},
            "issuers": [],
            "pending": True,
        },
    }
    assert format_jwks(status, NOW) == [
        "signing keys (JWKS)",
        "  JWKS cache /ro/jwks: cannot create /ro/jwks: Read-only (keys serve from memory; a "
        "restart while an identity provider is down would have none)",
        "  changed keys are not published (the published snapshot refused them; see the "
        "control plane's log) while the config is REJECTED: fix the config",
    ]


def test_no_issuers_no_section_and_hostile_text_is_escaped() -> None:
    assert format_jwks({"jwks": {"cache": {}, "issuers": []}}) == []
    assert format_jwks({}) == []
    hostile = {
        "config": {},
        "jwks": {"issuers": [issuer("x", "never_fetched", last_error="a\x1b[2Jb\nforged")]},
    }
    text = format_status(hostile)
    assert "\x1b" not in text and "forged" in text and "\nforged" not in text
