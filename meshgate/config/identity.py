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

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from .access import ClaimValue, PathPatternStr
from .issuers import (
    HMAC_ALGORITHMS,
    JWT_ALGORITHMS,
    Claim,
    IdentityClaims,
    Issuer,
    Jwks,
    JwtAlgorithm,
    TokenSource,
)
from .login_presets import OIDC_SCOPES, PRESETS, check_endpoint, check_scope
from .values import HttpMethod, Model, Name, exactly_one

__all__ = [
    "HMAC_ALGORITHMS",
    "JWT_ALGORITHMS",
    "Claim",
    "IdentityClaims",
    "Issuer",
    "Jwks",
    "JwtAlgorithm",
    "Login",
    "Permission",
    "Policy",
    "Role",
    "Rule",
    "SecretRef",
    "TokenSource",
]


class SecretRef(Model):
    """Where the control plane reads a secret: an environment variable or a file.

    Never the secret itself: the gateway config is shared, reviewed and logged; secrets are not.
    """

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    file: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_the_secret(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            raise ValueError(
                "a secret is never written in the config: name an environment variable "
                "({env: NAME}) or a file ({file: /path}) that the control plane reads it from"
            )
        return value

    @model_validator(mode="after")
    def _one_place(self) -> SecretRef:
        exactly_one(self, ("env", "file"), "a secret")
        return self

    def key(self) -> str:
        """Where the secret is, as one string (``env:NAME``, ``file:PATH``): how the compile
        input names its value, and safe to log."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


class Permission(Model):
    """Requests a role may make: path patterns and methods (all methods when omitted).

    A pattern is a path; ``*`` as a whole segment matches one segment, and a trailing ``/**``
    matches any rest (``/orders/**`` covers ``/orders`` and everything below it).
    """

    paths: Annotated[list[PathPatternStr], Field(min_length=1)]
    #: ``GET`` also covers ``HEAD`` (which servers answer like a ``GET`` without the body).
    methods: list[HttpMethod] = Field(default_factory=list)


class Role(Model):
    """A set of permissions that tokens grant by naming it in a role claim."""

    name: Name
    #: Roles whose permissions this one also has (flattened at compile time; no cycles).
    inherits: list[Name] = Field(default_factory=list)
    permissions: list[Permission] = Field(default_factory=list)
    claim_values: list[ClaimValue] = Field(
        default_factory=list,
        description="values of the issuers' role claims that mean this role (a scope such as "
        "'orders:read', a group such as 'Orders.Admin'); default: the role's name",
    )


class Rule(Model):
    """Who (roles, subjects, or any authenticated caller) may or may not make which requests.

    ``paths``/``methods`` omitted: every request (for an allow rule naming roles: what those
    roles' permissions allow).
    """

    roles: list[Name] = Field(default_factory=list)
    subjects: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    authenticated: bool = False
    paths: list[PathPatternStr] = Field(default_factory=list)
    methods: list[HttpMethod] = Field(default_factory=list)
    shadow: bool = Field(
        default=False,
        description="deny rules only: enforce nothing, log whom the rule would have denied",
    )

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
            raise ValueError(
                "a policy needs at least one issuer in 'issuers' (whose tokens count as "
                "credentials)"
            )
        return self


LoginProvider = Literal["google", "github", "oidc"]

#: The endpoint URLs of a login: https (plain http only on this machine), checked by
#: :func:`~meshgate.config.login_presets.check_endpoint`.
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
Scope = Annotated[str, AfterValidator(check_scope)]
#: A path the oauth2 filter answers itself: no query, no fragment, no spaces.
LoginPath = Annotated[str, Field(pattern=r"^/[^\s?#]*$")]


class Login(Model):
    """Browser sign-in with OAuth2 / OIDC (Envoy's ``oauth2`` filter).

    Presets fill the endpoints and scopes of ``google`` (OIDC) and ``github`` (OAuth2); what
    the config names explicitly wins (GitHub Enterprise has its own host); ``oidc`` takes the
    endpoints from the config. Secrets come from the environment or files, over SDS.
    """

    name: Name
    provider: LoginProvider
    client_id: Annotated[str, Field(min_length=1, pattern=r"^[\x21-\x7e]+$")]
    client_secret: SecretRef
    #: Signs (and encrypts) the gateway's own cookies; the same on every replica.
    hmac_secret: SecretRef
    authorization_endpoint: Endpoint | None = None
    token_endpoint: Endpoint | None = None
    end_session_endpoint: Endpoint | None = None
    scopes: Annotated[list[Scope], Field(min_length=1)] | None = None
    redirect_path: LoginPath = "/oauth2/callback"
    signout_path: LoginPath = "/oauth2/signout"
    forward_token: bool = Field(
        default=True, description="send the access token upstream as 'Authorization: Bearer'"
    )
    use_refresh_token: bool = True
    #: CA bundle that verifies the token endpoint's certificate (default: the system's).
    ca_file: Annotated[str, Field(min_length=1, pattern=r"^/")] | None = None

    @model_validator(mode="after")
    def _endpoints(self) -> Login:
        if self.provider == "oidc":
            missing = [
                f for f in ("authorization_endpoint", "token_endpoint") if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"provider 'oidc' needs {' and '.join(repr(m) for m in missing)}")
        scopes = self.effective_scopes()
        if len(set(scopes)) != len(scopes):
            raise ValueError("'scopes': each scope once")
        if self.end_session_endpoint is not None and "openid" not in scopes:
            raise ValueError(
                "'end_session_endpoint' needs the 'openid' scope: signing out at the provider "
                "is part of OpenID Connect (Envoy refuses it otherwise)"
            )
        if self.redirect_path == self.signout_path:
            raise ValueError("'redirect_path' and 'signout_path' must differ")
        return self

    def effective_authorization_endpoint(self) -> str:
        return self._preset_or_own("authorization_endpoint")

    def effective_token_endpoint(self) -> str:
        return self._preset_or_own("token_endpoint")

    def effective_end_session_endpoint(self) -> str | None:
        if self.end_session_endpoint is not None:
            return self.end_session_endpoint
        preset = PRESETS.get(self.provider)
        return preset.end_session_endpoint if preset is not None else None

    def effective_scopes(self) -> list[str]:
        if self.scopes is not None:
            return list(self.scopes)
        preset = PRESETS.get(self.provider)
        return list(preset.scopes if preset is not None else OIDC_SCOPES)

    def is_oidc(self) -> bool:
        """OpenID Connect (an ID token comes back): the ``openid`` scope is asked for."""
        return "openid" in self.effective_scopes()

    def _preset_or_own(self, field: Literal["authorization_endpoint", "token_endpoint"]) -> str:
        own: str | None = getattr(self, field)
        if own is not None:
            return own
        return str(getattr(PRESETS[self.provider], field))  # 'oidc' always names its own
