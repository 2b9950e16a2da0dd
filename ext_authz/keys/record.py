"""What a store holds about one API key: metadata and the keyed hash, never the key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: one name per scope as policies name them (``orders:read``); no spaces or commas
SCOPE = re.compile(r"^[A-Za-z0-9_.:/*-]{1,128}$")
NAME = re.compile(r"^[A-Za-z0-9_. @:/-]{1,128}$")
TENANT = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    tenant: str
    scopes: tuple[str, ...]
    digest: str = field(repr=False)
    created_at: float
    #: None: never expires
    expires_at: float | None = None
    revoked_at: float | None = None
    #: set on the old key by a rotation: the key id that replaces it
    replaced_by: str | None = None
    last_used_at: float | None = None

    def state(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked`` at ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def valid(self, now: float) -> bool:
        return self.state(now) == "active"

    def public(self) -> dict[str, object]:
        """The record as ``list``, the admin API and ``meshgate status`` show it: no digest."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "tenant": self.tenant,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "replaced_by": self.replaced_by,
            "last_used_at": self.last_used_at,
        }


class KeyInputError(ValueError):
    """A name, tenant, scope or duration that cannot be used; says which and why."""


def check_fields(name: str, tenant: str, scopes: tuple[str, ...]) -> None:
    if not NAME.match(name):
        raise KeyInputError(
            f"name {name!r}: 1-128 characters of letters, digits, space and _ . @ : / -"
        )
    if not TENANT.match(tenant):
        raise KeyInputError(f"tenant {tenant!r}: 1-128 characters of letters, digits and _ . : -")
    for s in scopes:
        if not SCOPE.match(s):
            raise KeyInputError(f"scope {s!r}: 1-128 characters of letters, digits and _ . : / * -")
    if len(scopes) > 256:
        raise KeyInputError(f"{len(scopes)} scopes; at most 256")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d{1,9})([smhdw])$")


def parse_duration(text: str, what: str = "duration") -> float:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` in seconds; anything else is refused."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise KeyInputError(
            f"{what} {text!r}: a positive whole number and a unit s, m, h, d or w (like 90d)"
        )
    return float(int(m.group(1)) * _UNITS[m.group(2)])
