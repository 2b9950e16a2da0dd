"""The signing-keys part of ``meshgate status``: per issuer, whether its tokens can pass.

Reads the ``jwks`` section of the control plane's ``/status`` (see
:meth:`xds_server.jwks.manager.JwksManager.as_dict`). An issuer without keys in force
(``expired``, ``never_fetched``) has every token refused (401): that is a failure status
reports with exit code 2, like a rejected config.
"""

from __future__ import annotations

import time
from typing import Any

#: States in which an issuer has no keys: its tokens are refused.
NO_KEYS = ("expired", "never_fetched")
_LABELS = {
    "fresh": "fresh",
    "stale": "STALE",
    "expired": "EXPIRED",
    "never_fetched": "NEVER FETCHED",
}


def _when(ts: Any, now: float) -> str:
    if not isinstance(ts, int | float):
        return "never"
    delta = ts - now
    return f"in {_span(delta)}" if delta > 0 else f"{_span(-delta)} ago"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _issuer_line(i: dict[str, Any], width: int, now: float) -> str:
    state = i.get("state")
    label = _LABELS.get(str(state), str(state))
    head = f"  {i.get('issuer', '?'):<{width}}  {label:<13}  "
    parts: list[str] = []
    if state in NO_KEYS:
        parts.append("no keys: its tokens are refused (401)")
        if state == "expired":
            parts.append(
                f"the last good keys were fetched {_when(i.get('fetched_at'), now)}, longer "
                f"ago than max_stale ({_span(float(i.get('max_stale') or 0))})"
            )
    else:
        n = i.get("keys") or 0
        kids = ", ".join(k or "(no kid)" for k in i.get("kids") or [])
        parts.append(f"{n} key{'s' if n != 1 else ''}" + (f" ({kids})" if kids else ""))
        parts.append(f"fetched {_when(i.get('fetched_at'), now)}")
        if state == "stale":
            parts.append(
                f"fetches fail since {_when(i.get('stale_since'), now)}; the last good keys "
                f"serve, and expire {_when(i.get('expires_at'), now)}"
            )
    if state != "fresh" and i.get("last_error"):
        parts.append(f"last error: {i['last_error']}")
    verb = "next fetch" if state == "fresh" else "next try"
    parts.append(f"{verb} {_when(i.get('next_fetch'), now)}")
    parts.append(str(i.get("source", "")))
    return f"{head}{'; '.join(parts)}"


def format_jwks(status: dict[str, Any], now: float | None = None) -> list[str]:
    """The lines about signing keys; none when no issuer fetches keys."""
    section = status.get("jwks")
    if not isinstance(section, dict):
        return []
    issuers = [i for i in section.get("issuers") or [] if isinstance(i, dict)]
    cache = section.get("cache") or {}
    if not issuers and not cache.get("error"):
        return []
    now = time.time() if now is None else now
    out = ["signing keys (JWKS)"]
    width = max((len(str(i.get("issuer", ""))) for i in issuers), default=0)
    out += [_issuer_line(i, width, now) for i in issuers]
    if cache.get("error"):
        out.append(
            f"  JWKS cache {cache.get('directory')}: {cache['error']} (keys serve from memory; "
            "a restart while an identity provider is down would have none)"
        )
    if section.get("pending") and (status.get("config") or {}).get("errors"):
        # keys reach the published snapshot while the config is rejected, unless the
        # validator refused that change (its reason is in the control plane's log)
        out.append(
            "  changed keys are not published (the published snapshot refused them; see the "
            "control plane's log) while the config is REJECTED: fix the config"
        )
    return out


def keys_missing(status: dict[str, Any]) -> bool:
    """Some issuer has no keys in force (its tokens are all refused)."""
    section = status.get("jwks")
    if not isinstance(section, dict):
        return False
    return any(
        isinstance(i, dict) and i.get("state") in NO_KEYS for i in section.get("issuers") or []
    )
