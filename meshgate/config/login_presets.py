"""What a ``login``'s provider preset fills in, and the checks on its URLs and scopes.

Google is OpenID Connect: the ID token is a JWT a policy can verify, and the refresh token
renews a session without a new sign-in. Google publishes no end-session endpoint (it has a
revocation endpoint, which is not a browser sign-out), so a Google login signs out of the
gateway only.

GitHub is plain OAuth2: its token endpoint answers JSON when asked for it (Envoy sends
``Accept: application/json``), with ``access_token``, ``token_type`` and ``scope`` but, for an
OAuth app, no ``expires_in``, no ``refresh_token`` and no ID token. The compiler therefore
gives every login a default access-token lifetime (used only when the provider names none),
after which the browser goes through GitHub again (silently, once the app is authorized).
Envoy's own default scope is ``user`` (read *and write* access to a GitHub profile), so a scope
list is always sent: the preset asks for ``read:user`` and ``user:email`` only.

Pure data and string checks: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from meshgate.redact import show


@dataclass(frozen=True)
class Preset:
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None
    scopes: tuple[str, ...]


PRESETS: dict[str, Preset] = {
    "google": Preset(
        authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
        token_endpoint="https://oauth2.googleapis.com/token",
        end_session_endpoint=None,
        scopes=("openid", "email", "profile"),
    ),
    "github": Preset(
        authorization_endpoint="https://github.com/login/oauth/authorize",
        token_endpoint="https://github.com/login/oauth/access_token",
        end_session_endpoint=None,
        scopes=("read:user", "user:email"),
    ),
}

#: Scopes of a ``provider: oidc`` login that names none: an ID token and nothing more.
OIDC_SCOPES: tuple[str, ...] = ("openid",)

#: RFC 6749 §3.3 scope-token: printable ASCII without space, '"' and '\'.
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1``: the only hosts reached over plain http."""
    if host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(value: str) -> str:
    """An absolute https URL with a host; plain http only on this machine (tests, a local
    provider): over http the client secret and the user's codes would cross the network in
    clear."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{show(value)} is not an absolute http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{show(value)}: credentials do not belong in the URL")
    if parts.fragment or "#" in value:
        raise ValueError(f"{show(value)}: a URL fragment is never sent to the server")
    if re.search(r"\s", value):
        raise ValueError(f"{show(value)}: a URL cannot contain spaces")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"{show(value)}: use https (plain http would carry the client secret and sign-in "
            "codes in clear; it is accepted only for localhost, 127.0.0.1 and [::1])"
        )
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError(f"{show(value)}: the port is not a number from 0 to 65535") from None
    return value


def check_scope(value: str) -> str:
    if _SCOPE.match(value) is None:
        raise ValueError(
            f"invalid scope {show(value)}: printable characters without spaces, '\"' or '\\' "
            "(one scope per list item)"
        )
    return value
