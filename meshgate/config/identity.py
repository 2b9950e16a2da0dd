"""Identity and access: JWT issuers, roles, policies and browser logins.

The policy model that every authorization feature shares. Security teams define *issuers*
(who may vouch for a caller), *roles* (what a caller may do: permissions as path patterns and
methods, with inheritance) and *policies* (which issuers a route accepts and which roles and
rules apply); service owners only *attach* a policy to a virtual host or route by name
(``policy: orders``). Envoy enforces all of this itself (``jwt_authn`` + ``rbac``): the
compiler turns a policy into filter config, so a policy route pays no Python hop. The ext_authz
service (API keys, intrusion detection) extends the same model: a policy will accept API keys
as another credential and feed their scopes into the same roles.

Secrets (OAuth2 client secrets, HMAC keys) are never written in the gateway config: a
:class:`SecretRef` names an environment variable or a file, and the control plane reads it
and hands it to Envoy over SDS.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from meshgate.redact import show

from .traffic import HeaderName
from .values import Duration, HttpMethod, Model, Name, exactly_one

#: Signature algorithms Envoy's jwt_authn verifies. ``none`` and anything else is refused.
JWT_ALGORITHMS = (
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
)
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


def _one_or_more(value: Any) -> Any:
    """``audiences: api`` and ``audiences: [api, web]`` both mean a list."""
    return [value] if isinstance(value, str) else value


class SecretRef(Model):
    """Where the control plane reads a secret: an environment variable or a file.

    Never the secret itself: the gateway config is shared, reviewed and logged; secrets are not.
    """

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    file: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_place(self) -> SecretRef:
        exactly_one(self, ("env", "file"), "a secret")
        return self

    def key(self) -> str:
        """Where the secret is, as one string (``env:NAME``, ``file:PATH``): how the compile
        input names its value, and safe to log."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


#: A shorter refresh interval would have the control plane hammer the identity provider.
MIN_JWKS_REFRESH = timedelta(seconds=1)


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


class Jwks(Model):
    """Where an issuer's signing keys come from, and how long a fetched set stays usable.

    The control plane fetches a URL itself (Envoy never does), keeps the last good set in
    memory and on disk, and serves it to Envoy, so tokens keep passing while the identity
    provider is down, up to ``max_stale``.
    """

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] | None = None
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

    header: HeaderName | None = None
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

    subject: Claim = "sub"
    tenant: Claim | None = None
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
    algorithms: Annotated[list[JwtAlgorithm], Field(min_length=1)] = Field(
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
    #: Upstream header -> claim (nested with '.'; a list claim is sent comma-separated).
    claim_headers: dict[HeaderName, Claim] = Field(default_factory=dict)

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, algorithms: list[str]) -> list[str]:
        if len(set(algorithms)) != len(algorithms):
            raise ValueError("each algorithm once")
        return algorithms


class Permission(Model):
    """Requests a role may make: path patterns and methods (all methods when omitted).

    A pattern is a path; ``*`` as a whole segment matches one segment, and a trailing ``/**``
    matches any rest (``/orders/**`` covers ``/orders`` and everything below it).
    """

    paths: Annotated[list[Annotated[str, Field(pattern=r"^/")]], Field(min_length=1)]
    methods: list[HttpMethod] = Field(default_factory=list)


class Role(Model):
    name: Name
    #: Roles whose permissions this one also has (flattened at compile time; no cycles).
    inherits: list[Name] = Field(default_factory=list)
    permissions: list[Permission] = Field(default_factory=list)


class Rule(Model):
    """Who (roles, subjects, or any authenticated caller) may or may not make which requests.

    ``paths``/``methods`` omitted: every request (for an allow rule naming roles: what those
    roles' permissions allow).
    """

    roles: list[Name] = Field(default_factory=list)
    subjects: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    authenticated: bool = False
    paths: list[Annotated[str, Field(pattern=r"^/")]] = Field(default_factory=list)
    methods: list[HttpMethod] = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone(self) -> Rule:
        if not (self.roles or self.subjects or self.authenticated):
            raise ValueError(
                "a rule needs 'roles', 'subjects' or 'authenticated: true' (who it is about)"
            )
        return self


class Policy(Model):
    """What a route demands: accepted credentials, and who may do what.

    Once attached, what a policy does not allow is denied; ``deny`` rules win over everything.
    With no ``roles`` and no ``allow`` rules, any caller with a valid credential may pass.
    """

    name: Name
    mode: Literal["enforce", "shadow"] = Field(
        default="enforce",
        description="shadow: enforce nothing, log whom the policy would have denied",
    )
    issuers: list[Name] = Field(default_factory=list)
    #: Roles whose permissions (with what they inherit) this policy grants to their holders.
    roles: list[Name] = Field(default_factory=list)
    allow: list[Rule] = Field(default_factory=list)
    deny: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _credential(self) -> Policy:
        if not self.issuers:
            raise ValueError("a policy needs at least one of 'issuers' (which credentials count)")
        return self


LoginProvider = Literal["google", "github", "oidc"]


class Login(Model):
    """Browser sign-in with OAuth2 / OIDC (Envoy's ``oauth2`` filter).

    Presets fill the endpoints of ``google`` (OIDC) and ``github`` (OAuth2); ``oidc`` takes them
    from the config. Secrets come from the environment or files, over SDS.
    """

    name: Name
    provider: LoginProvider
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretRef
    #: Signs the gateway's own cookies; the same on every replica.
    hmac_secret: SecretRef
    authorization_endpoint: Annotated[str, Field(pattern=r"^https?://")] | None = None
    token_endpoint: Annotated[str, Field(pattern=r"^https?://")] | None = None
    end_session_endpoint: Annotated[str, Field(pattern=r"^https?://")] | None = None
    scopes: list[str] | None = None
    redirect_path: Annotated[str, Field(pattern=r"^/")] = "/oauth2/callback"
    signout_path: Annotated[str, Field(pattern=r"^/")] = "/oauth2/signout"
    forward_token: bool = Field(
        default=True, description="send the access token upstream as 'Authorization: Bearer'"
    )
    use_refresh_token: bool = True

    @model_validator(mode="after")
    def _endpoints(self) -> Login:
        if self.provider == "oidc":
            missing = [
                f for f in ("authorization_endpoint", "token_endpoint") if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"provider 'oidc' needs {' and '.join(repr(m) for m in missing)}")
        return self
