"""Names the identity features share with each other and with Envoy: one place, no drift.

The JWT feature writes a verified token's payload and header into Envoy's dynamic metadata
under these keys; the policy feature's RBAC rules read them there; the access log and the
ext_authz service (later) read the same. Changing a name here changes it everywhere.
"""

from __future__ import annotations

from meshgate.config.client import GATEWAY_HEADER_PREFIX

#: Envoy's JWT filter (also the dynamic-metadata namespace its results are written under).
JWT_FILTER = "envoy.filters.http.jwt_authn"
#: Removes every client-sent ``x-meshgate-*`` request header, first in every chain.
CLIENT_HEADERS_FILTER = "meshgate.client_headers"
#: RBAC on the client address (listener, virtual host and route ``ip_rules``).
IP_RBAC_FILTER = "envoy.filters.http.rbac.ip"
#: RBAC on the verified token's header (``crit``, ``alg`` outside the allowlist, embedded
#: keys): its denials are answered 401, as a bad token, not 403.
TOKEN_RBAC_FILTER = "envoy.filters.http.rbac.token"
#: A policy's ``deny`` rules (action DENY): they win over every grant.
DENY_RBAC_FILTER = "envoy.filters.http.rbac.deny"
#: A policy's grants (action ALLOW): what they do not allow is denied.
ALLOW_RBAC_FILTER = "envoy.filters.http.rbac.allow"
#: Browser sign-in: one oauth2 filter per login (``envoy.filters.http.oauth2.<login>``), since
#: the filter has no per-route settings; a family row of the order table.
OAUTH2_FILTER = "envoy.filters.http.oauth2."

#: Every request header with this prefix that a client sends is removed before any filter
#: (spelled once, in the config model, which also refuses route matches on such headers).
IDENTITY_HEADER_PREFIX = GATEWAY_HEADER_PREFIX
SUBJECT_HEADER = "x-meshgate-subject"
TENANT_HEADER = "x-meshgate-tenant"
ROLES_HEADER = "x-meshgate-roles"
#: Which issuer (by its config name) vouched for the caller.
ISSUER_HEADER = "x-meshgate-issuer"


def payload_key(issuer: str) -> str:
    """``JwtProvider.payload_in_metadata`` of issuer ``issuer`` (its config name)."""
    return issuer


def header_key(issuer: str) -> str:
    """``JwtProvider.header_in_metadata``: the token's JOSE header, for the token checks."""
    return f"{issuer}.header"


def provider_name(issuer: str) -> str:
    """The jwt_authn provider (and requirement) name of an issuer."""
    return issuer


#: Route metadata namespace naming a route's policy (``policy``, ``mode``: ``enforce``,
#: ``shadow`` or ``unavailable``): the access log reads it, and the 503 reply of a route whose
#: policy is unavailable is recognised by it.
POLICY_METADATA = "meshgate.policy"
#: Envoy writes every RBAC filter's results into this one dynamic-metadata namespace (whatever
#: the filter's name), each key prefixed by the filter's ``rules_stat_prefix``.
RBAC_METADATA = "envoy.filters.http.rbac"
#: ``rules_stat_prefix`` (and ``shadow_rules_stat_prefix``) of the deny and the allow filter:
#: their results are ``policy_deny_shadow_engine_result`` and so on, and their stats
#: ``http.<listener>.rbac.policy_deny_...``.
DENY_RBAC_PREFIX = "policy_deny_"
ALLOW_RBAC_PREFIX = "policy_allow_"


def oauth2_filter(login: str) -> str:
    """The oauth2 filter of login ``login`` (its config name)."""
    return f"{OAUTH2_FILTER}{login}"


#: Envoy's oauth2 cookie names (``OAuth2Credentials.CookieNames`` field -> Envoy's default).
_LOGIN_COOKIES = {
    "bearer_token": "BearerToken",
    "oauth_hmac": "OauthHMAC",
    "oauth_expires": "OauthExpires",
    "id_token": "IdToken",
    "refresh_token": "RefreshToken",
    "oauth_nonce": "OauthNonce",
    "code_verifier": "CodeVerifier",
}


def login_cookies(login: str) -> dict[str, str]:
    """The cookie names of login ``login``: Envoy's, suffixed with ``-<login>`` so that two
    logins on one host never read each other's cookies (``IdToken-corp``)."""
    return {field: f"{base}-{login}" for field, base in _LOGIN_COOKIES.items()}


def id_token_cookie(login: str) -> str:
    """Where login ``login`` keeps the ID token: an issuer's ``tokens: [{cookie: ...}]`` reads
    it there (the oauth2 filter runs first and hands the filters after it the token in clear)."""
    return login_cookies(login)["id_token"]
