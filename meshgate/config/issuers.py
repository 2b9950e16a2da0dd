"""JWT issuers: who may vouch for a caller, with which keys, in which tokens.

An issuer is one identity provider: its ``iss`` value, the audiences its tokens must name, the
signature algorithms accepted from it, where its keys come from (a URL or file the control
plane reads, or inline), where tokens are found in a request, and which claims tell who the
caller is. The compiler turns each into one provider of Envoy's ``jwt_authn`` filter
(``xds_server/compiler/features/jwt``). The checks here refuse what Envoy would accept but
would be unsafe: HMAC algorithms, private keys in the config, a token that cannot be stripped.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from meshgate.redact import show

from .jwk import describe, key_algorithms, parse_jwks, private_member
from .traffic import MutableHeaderName, TokenName
from .values import Duration, Model, Name, exactly_one

#: Signature algorithms Envoy's jwt_authn verifies. ``none`` and anything else is refused, and
#: so are the HMAC ones (HS*): see :data:`HMAC_ALGORITHMS`.
JwtAlgorithm = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
]
JWT_ALGORITHMS: tuple[str, ...] = get_args(JwtAlgorithm)

#: A claim name, with '.' for nesting (``realm_access.roles``), as jwt_authn reads them.
_CLAIM = re.compile(r"^[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*$")


def _check_claim(value: Any) -> Any:
    if isinstance(value, str) and _CLAIM.match(value) is None:
        raise ValueError(
            f"invalid claim name {show(value)}: letters, digits, '_', ':', '/' and '-', with "
            "'.' between the names of nested claims (for example 'realm_access.roles')"
        )
    return value


Claim = Annotated[str, BeforeValidator(_check_claim)]

#: HMAC algorithms verify with a shared secret, which Envoy would have to hold in its config
#: (and show in its config dump); a token signed with an issuer's *public* key as that secret is
#: the classic algorithm-confusion attack. Public-key algorithms only.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
#: Leeway bounds: Envoy reads ``clock_skew_seconds: 0`` as its default of 60 s, and a long
#: leeway keeps expired tokens alive.
MIN_LEEWAY_SECONDS = 1
MAX_LEEWAY_SECONDS = 3600


def _check_header_claim(value: Any) -> Any:
    """A claim sent upstream as a header is read by Envoy's metadata formatter
    (``%DYNAMIC_METADATA(ns:issuer:claim)%``), which splits its path at ':'."""
    value = _check_claim(value)
    if isinstance(value, str) and ":" in value:
        raise ValueError(
            f"claim {show(value)} cannot be sent as a header: Envoy reads claims for headers by "
            "a path separated with ':' (a role claim with ':' still counts for policies)"
        )
    return value


#: A claim whose value becomes a request header.
HeaderClaim = Annotated[str, BeforeValidator(_check_header_claim)]


def _check_claim_header(value: Any) -> Any:
    if isinstance(value, str) and value.lower().startswith("x-meshgate-"):
        raise ValueError(
            f"header {show(value)} is reserved: meshgate sets the x-meshgate-* headers itself "
            "(subject, tenant, roles, issuer) and strips client-sent ones"
        )
    return value


#: An upstream header a claim is copied to: one a route may set, not an x-meshgate-* one.
ClaimHeaderName = Annotated[MutableHeaderName, BeforeValidator(_check_claim_header)]


def _one_or_more(value: Any) -> Any:
    """``audiences: api`` and ``audiences: [api, web]`` both mean a list."""
    return [value] if isinstance(value, str) else value


def _check_algorithm(value: Any) -> Any:
    if isinstance(value, str) and value not in JWT_ALGORITHMS:
        public = [a for a in JWT_ALGORITHMS if a not in HMAC_ALGORITHMS]
        raise ValueError(
            f"unknown signature algorithm {show(value)}: use {', '.join(public)} (the names are "
            "case-sensitive; 'none' is never accepted)"
        )
    return value


def _check_url(value: Any) -> Any:
    if isinstance(value, str) and re.match(r"^https?://[^\s/?#]+[^\s]*$", value) is None:
        raise ValueError(
            f"invalid JWKS URL {show(value)}: an http:// or https:// URL with a host, no spaces"
        )
    return value


MIN_JWKS_REFRESH = timedelta(seconds=1)


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


class Jwks(Model):
    """Where an issuer's signing keys come from, and how long a fetched set stays usable.

    The control plane fetches a URL itself (Envoy never does), keeps the last good set in
    memory and on disk, and serves it to Envoy, so tokens keep passing while the identity
    provider is down, up to ``max_stale``.
    """

    url: Annotated[str, BeforeValidator(_check_url)] | None = None
    file: Annotated[str, Field(min_length=1)] | None = None
    #: A JWKS document (the JSON text, or the same structure in YAML).
    inline: str | dict[str, Any] | None = None
    timeout: Duration = Field(default=timedelta(seconds=5), description="one fetch of the URL")
    refresh: Duration = Field(
        default=timedelta(minutes=5),
        description="how often the URL (or file) is read again; a key newly published by the "
        "identity provider is in force within this interval",
    )
    max_stale: Duration = Field(
        default=timedelta(hours=24),
        description="how long the last good set is used while the URL cannot be fetched; "
        "after that the issuer's tokens are refused (401)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Jwks:
        exactly_one(self, ("url", "file", "inline"), "'jwks'")
        if self.timeout <= timedelta(0):
            raise ValueError("'timeout' must be more than 0 (one fetch of the keys)")
        if self.refresh < MIN_JWKS_REFRESH:
            raise ValueError(
                f"'refresh' is {_seconds(self.refresh)}: at least 1s (the identity provider "
                "would be asked for its keys without pause)"
            )
        if self.max_stale < self.refresh:
            raise ValueError(
                f"'max_stale' ({_seconds(self.max_stale)}) is shorter than 'refresh' "
                f"({_seconds(self.refresh)}): the keys would expire between two fetches and "
                "every token be refused; make 'max_stale' at least 'refresh'"
            )
        return self

    @field_validator("inline")
    @classmethod
    def _public_keys(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is None:
            return None
        keys = parse_jwks(value)
        for index, key in enumerate(keys):
            member = private_member(key)
            if member is not None:
                raise ValueError(
                    f"keys[{index}] ({describe(key)}) has the private member '{member}': a JWKS "
                    "in the config holds public keys only (never a private or shared secret)"
                )
        return value

    def inline_keys(self) -> list[Any]:
        """The keys of an inline set (empty for a fetched one)."""
        return parse_jwks(self.inline) if self.inline is not None else []

    def fingerprint(self) -> str:
        """Names the source the keys come from (``url:...``, ``file:...``), so keys fetched
        for an old URL are never used for a new one."""
        if self.url is not None:
            return f"url:{self.url}"
        if self.file is not None:
            return f"file:{self.file}"
        return "inline"


class TokenSource(Model):
    """Where the token is in the request: the ``Authorization`` header by default."""

    header: TokenName | None = None
    #: Text before the token in the header (``"Bearer "`` for ``Authorization``).
    prefix: str | None = None
    cookie: Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")] | None = None
    query: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._~-]+$")] | None = None

    @model_validator(mode="after")
    def _one_place(self) -> TokenSource:
        exactly_one(self, ("header", "cookie", "query"), "a token source")
        if self.prefix is not None and self.header is None:
            raise ValueError("'prefix' applies only to a token in a 'header'")
        return self


class IdentityClaims(Model):
    """Which claims say who the caller is; passed upstream as ``x-meshgate-subject``,
    ``x-meshgate-tenant`` and ``x-meshgate-roles``."""

    subject: HeaderClaim = "sub"
    tenant: HeaderClaim | None = None
    #: Claims holding role names: a list, or a space-separated string (OAuth2 ``scope``).
    roles: list[Claim] = Field(default_factory=lambda: ["roles"])


def _default_algorithms() -> list[JwtAlgorithm]:
    return ["RS256"]


class Issuer(Model):
    """One identity provider whose tokens a policy may accept."""

    name: Name
    issuer: Annotated[str, Field(min_length=1)]
    audiences: Annotated[
        list[Annotated[str, Field(min_length=1)]],
        Field(min_length=1),
        BeforeValidator(_one_or_more),
    ]
    algorithms: Annotated[
        list[Annotated[JwtAlgorithm, BeforeValidator(_check_algorithm)]], Field(min_length=1)
    ] = Field(
        default_factory=_default_algorithms,
        description="signature algorithms accepted from this issuer; any other is refused",
    )
    leeway: Duration = Field(
        default=timedelta(seconds=30),
        description="clock skew allowed when checking exp and nbf",
    )
    jwks: Jwks
    tokens: Annotated[list[TokenSource], Field(min_length=1)] = Field(
        default_factory=lambda: [TokenSource(header="authorization", prefix="Bearer ")],
        description="where to look for the token, in order",
    )
    forward_token: bool = Field(
        default=False, description="pass the token on to the upstream (default: strip it)"
    )
    identity: IdentityClaims = Field(default_factory=IdentityClaims)
    #: Upstream header -> claim (nested with '.'; a list or object claim is sent as JSON).
    claim_headers: dict[ClaimHeaderName, HeaderClaim] = Field(default_factory=dict)

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, algorithms: list[str]) -> list[str]:
        if len(set(algorithms)) != len(algorithms):
            raise ValueError("each algorithm once")
        hmac = [a for a in algorithms if a in HMAC_ALGORITHMS]
        if hmac:
            raise ValueError(
                f"{hmac[0]} is an HMAC algorithm: its shared secret would have to sit in Envoy's "
                "config, and tokens signed with a public key as the secret are a known attack; "
                "use a public-key algorithm (RS*, PS*, ES*, EdDSA)"
            )
        return algorithms

    @field_validator("leeway")
    @classmethod
    def _whole_seconds(cls, leeway: timedelta) -> timedelta:
        seconds = leeway.total_seconds()
        if seconds % 1 or not MIN_LEEWAY_SECONDS <= seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(
                f"leeway must be whole seconds from {MIN_LEEWAY_SECONDS}s to "
                f"{MAX_LEEWAY_SECONDS}s, got {seconds:g}s (Envoy counts clock skew in whole "
                "seconds and reads 0 as its default of 60s)"
            )
        return leeway

    @field_validator("jwks")
    @classmethod
    def _keys_for_algorithms(cls, jwks: Jwks, info: ValidationInfo) -> Jwks:
        algorithms = info.data.get("algorithms")
        keys = jwks.inline_keys()
        if jwks.inline is None or algorithms is None:
            return jwks
        if not any(key_algorithms(key) & set(algorithms) for key in keys):
            found = ", ".join(describe(k) for k in keys[:4]) or "no keys"
            raise ValueError(
                f"no key of 'inline' can verify {', '.join(algorithms)} (found: {found}); a "
                "key serves RS*/PS* (RSA), ES256/384/512 (EC P-256/384/521) or EdDSA (Ed25519), "
                "and only if its 'alg', 'use' and 'key_ops' allow it"
            )
        return jwks

    @field_validator("tokens")
    @classmethod
    def _each_source_once(cls, tokens: list[TokenSource]) -> list[TokenSource]:
        seen: set[tuple[str, str | None]] = set()
        for source in tokens:
            where = (
                ("header", (source.header or "").lower())
                if source.header is not None
                else ("cookie", source.cookie)
                if source.cookie is not None
                else ("query", source.query)
            )
            if where in seen:
                raise ValueError(f"token source {where[0]} {show(where[1])} is listed twice")
            seen.add(where)
        return tokens

    @model_validator(mode="after")
    def _query_is_stripped(self) -> Issuer:
        queries = [t.query for t in self.tokens if t.query is not None]
        if queries and self.forward_token:
            raise ValueError(
                f"a token in query parameter {show(queries[0])} cannot be forwarded: Envoy "
                "verifies only the first copy of a parameter named twice "
                f"('?{queries[0]}=A&{queries[0]}=B'), and the upstream may read the other one "
                "(the URL also reaches its logs); read the token from a header to forward it"
            )
        return self

    @model_validator(mode="after")
    def _cookie_is_forwarded(self) -> Issuer:
        cookies = [t.cookie for t in self.tokens if t.cookie is not None]
        if cookies and not self.forward_token:
            raise ValueError(
                f"a token in cookie {show(cookies[0])} cannot be stripped (Envoy removes a token "
                "from a header or query parameter, never from the Cookie header): set "
                "'forward_token: true' to send it upstream knowingly"
            )
        return self
