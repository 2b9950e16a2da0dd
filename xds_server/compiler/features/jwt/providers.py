"""Issuers and policies as Envoy's ``JwtAuthentication``: one provider per issuer, one
requirement per policy.

Routes pick their policy's requirement by name (``PerRouteConfig.requirement_name``), so the
filter has no ``rules`` of its own and a route without a policy never runs it. A provider:

* refuses tokens without ``exp`` (``require_expiration``: Envoy accepts them otherwise);
* reads the token from the issuer's sources only (explicit sources switch off Envoy's
  defaults, among them the ``access_token`` query parameter, which leaks into logs);
* writes the verified payload and JOSE header into dynamic metadata
  (:func:`~xds_server.compiler.identity_names.payload_key`, ``header_key``), where the token
  checks, the policy's RBAC rules and the identity headers read them; the role claims
  (top-level ones) are normalised there from space-separated strings (OAuth2 ``scope``) into
  lists, so RBAC can match one role in a list either way;
* keys verified tokens in a per-worker cache (signature checked once per token; ``exp``,
  ``nbf`` and the audience still on every request).

A policy in ``shadow`` mode enforces nothing: its requirement also accepts a missing or bad
token (``allow_missing_or_failed``), so the request passes and only the policy's shadow rules
note whom it would have refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from google.protobuf import empty_pb2

from meshgate.config.identity import Issuer, Policy
from xds_server.compiler.context import IssuerKeys
from xds_server.compiler.features.jwt.keys import served_jwks
from xds_server.compiler.features.jwt.usage import JwtUsage
from xds_server.compiler.identity_names import header_key, payload_key, provider_name

#: Verified tokens kept per provider and worker thread (Envoy's default is 100). A token
#: longer than Envoy's ``jwt_max_token_size`` (4 KiB) is verified every time.
JWT_CACHE_SIZE = 1000


def jwt_provider(issuer: Issuer, fetched: Mapping[str, IssuerKeys]) -> jwt_pb2.JwtProvider:
    provider = jwt_pb2.JwtProvider(
        issuer=issuer.issuer,
        audiences=issuer.audiences,
        require_expiration=True,
        clock_skew_seconds=int(issuer.leeway.total_seconds()),
        local_jwks=base_pb2.DataSource(inline_string=served_jwks(issuer, fetched)),
        forward=issuer.forward_token,
        payload_in_metadata=payload_key(issuer.name),
        header_in_metadata=header_key(issuer.name),
        jwt_cache_config=jwt_pb2.JwtCacheConfig(jwt_cache_size=JWT_CACHE_SIZE),
    )
    for source in issuer.tokens:
        if source.header is not None:
            provider.from_headers.append(
                jwt_pb2.JwtHeader(name=source.header.lower(), value_prefix=source.prefix or "")
            )
        elif source.cookie is not None:
            provider.from_cookies.append(source.cookie)
        elif source.query is not None:
            provider.from_params.append(source.query)
    spaced = [claim for claim in issuer.identity.roles if "." not in claim]
    if spaced:
        provider.normalize_payload_in_metadata.space_delimited_claims.extend(spaced)
    return provider


def requirement(policy: Policy) -> jwt_pb2.JwtRequirement:
    """Any one of the policy's issuers (and, in shadow mode, no valid token at all)."""
    providers = [jwt_pb2.JwtRequirement(provider_name=provider_name(i)) for i in policy.issuers]
    if policy.mode == "shadow":
        providers.append(jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty()))
    if len(providers) == 1:
        return providers[0]
    return jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=providers))


def jwt_authentication(
    usage: JwtUsage, fetched: Mapping[str, IssuerKeys]
) -> jwt_pb2.JwtAuthentication:
    """The listener's filter config. ``strip_failure_response`` drops Envoy's own 401 body and
    ``WWW-Authenticate`` (whose realm echoes the request URL, query and all): the listener's
    local replies give the JSON body and the header (``replies.py``)."""
    return jwt_pb2.JwtAuthentication(
        providers={provider_name(i.name): jwt_provider(i, fetched) for i in usage.issuers},
        requirement_map={p.name: requirement(p) for p in usage.policies},
        strip_failure_response=True,
    )
