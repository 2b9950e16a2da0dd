"""Where each issuer's keys come from, as the compile job reports it: plain data, no keys.

The control plane never parses the config (the compile worker does), so the worker says which
JWKS sources the compiled config has, and the manager reconciles its fetchers with that list.
Inline keys are not a source: the compiler takes them from the config itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from meshgate.config import GatewayConfig
from meshgate.redact import escape


@dataclass(frozen=True)
class JwksSource:
    """One issuer's JWKS source and its timing, in seconds."""

    issuer: str
    #: ``Jwks.fingerprint()``: keys are only used for the source they were fetched from.
    fingerprint: str
    url: str | None
    #: Absolute path (a relative one in the config is relative to the config's directory).
    file: str | None
    timeout: float
    refresh: float
    max_stale: float
    #: The issuer's allowed algorithms: which fetched keys Envoy gets. The control plane needs
    #: them to put new keys into the published snapshot while the config is rejected
    #: (:mod:`xds_server.compiler.features.jwt.rekey`); empty, no key would be used.
    algorithms: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "url" if self.url is not None else "file"

    @property
    def shown(self) -> str:
        """The source as logs and status may show it (no credentials of a URL)."""
        if self.url is not None:
            return f"url {safe_url(self.url)}"
        return f"file {escape(self.file or '')}"


def safe_url(url: str) -> str:
    """``url`` without what may be a credential: user info and the query's values."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<unparsable URL>"
    query = "<redacted>" if parts.query else ""
    return escape(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def jwks_sources(config: GatewayConfig, base: Callable[[int], str]) -> tuple[JwksSource, ...]:
    """The URL and file JWKS sources of ``config``, in issuer order; ``base(i)`` is the
    directory a relative ``file`` of issuer ``i`` is relative to (its config file's)."""
    out: list[JwksSource] = []
    for index, issuer in enumerate(config.issuers):
        jwks = issuer.jwks
        if jwks.url is None and jwks.file is None:
            continue
        file = None
        if jwks.file is not None:
            file = os.path.normpath(os.path.join(os.path.abspath(base(index)), jwks.file))
        out.append(
            JwksSource(
                issuer=issuer.name,
                fingerprint=jwks.fingerprint(),
                url=jwks.url,
                file=file,
                timeout=jwks.timeout.total_seconds(),
                refresh=jwks.refresh.total_seconds(),
                max_stale=jwks.max_stale.total_seconds(),
                algorithms=tuple(issuer.algorithms),
            )
        )
    return tuple(out)
