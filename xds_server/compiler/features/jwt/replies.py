"""401 replies for missing and bad tokens: JSON with a machine-readable reason, and a
``WWW-Authenticate`` challenge (RFC 6750 §3).

Two filters refuse tokens: jwt_authn itself (response code details
``jwt_authn_access_denied{<status, spaces as _>}``) and the token checks (an RBAC denial,
``rbac_access_denied_matched_policy[token:<check>]``, which Envoy answers 403). The listener's
local reply config recognises both by their details and answers 401 with

    {"error": "unauthorized", "reason": "token_expired", "message": "...", "request_id": "..."}

``WWW-Authenticate: Bearer`` when no token came, ``Bearer error="invalid_token"`` for a bad one.
jwt_authn's own body and challenge are switched off (``strip_failure_response``): its realm
echoes the request URL, query string and all. An audience mismatch, which jwt_authn answers
403, is a bad token like any other: 401 too.

The mappers go before the listener's catch-all mapper (the last one), which would otherwise
give these replies the generic envelope.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from xds_server.compiler.features.jwt.checks import TOKEN_CHECKS
from xds_server.compiler.protos import json_format_string, pack

#: jwt_authn's failures (Envoy's status text, matched as a prefix), in matching order:
#: (status, reason, message). The last entry, an empty prefix, catches any other.
JWT_FAILURES: tuple[tuple[str, str, str], ...] = (
    ("Jwt is missing", "token_missing", "this route needs a bearer token"),
    ("Jwt is expired", "token_expired", "the token has expired ('exp')"),
    ("Jwt not yet valid", "token_not_yet_valid", "the token is not valid yet ('nbf')"),
    (
        "Audiences in Jwt are not allowed",
        "audience_not_allowed",
        "the token is not meant for this gateway ('aud')",
    ),
    (
        "Jwt issuer is not configured",
        "issuer_not_allowed",
        "the token's issuer is not accepted on this route ('iss')",
    ),
    (
        "Jwks doesn't have key to match kid or alg from Jwt",
        "unknown_key",
        "no key of the issuer matches the token's 'kid' and 'alg'",
    ),
    (
        "Jwt verification fails",
        "verification_failed",
        "the token's signature does not verify, or it lacks a required claim ('exp')",
    ),
    (
        "Jwt header [alg] is not supported",
        "algorithm_not_allowed",
        "the token's algorithm is not one the gateway accepts",
    ),
    ("Jwt ", "token_malformed", "the token is not a well-formed compact JWS"),
    ("", "token_invalid", "the token was refused"),
)

MISSING_CHALLENGE = "Bearer"
INVALID_CHALLENGE = 'Bearer error="invalid_token"'


def _details_filter(expression: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=pack(cel_pb2.ExpressionFilter(expression=expression)),
        )
    )


def _cel_string(text: str) -> str:
    """A CEL string literal (double-quoted; the details are ASCII without quotes)."""
    return json.dumps(text)


def jwt_details(status: str) -> str:
    """The response code details jwt_authn gives for its ``status`` text."""
    return "jwt_authn_access_denied{" + status.replace(" ", "_")


def unauthorized(
    condition: str, reason: str, message: str, challenge: str
) -> hcm_pb2.ResponseMapper:
    body = {
        "error": "unauthorized",
        "reason": reason,
        "message": message,
        "request_id": "%REQ(X-REQUEST-ID)%",
    }
    return hcm_pb2.ResponseMapper(
        filter=_details_filter(condition),
        status_code=wrappers_pb2.UInt32Value(value=401),
        body_format_override=json_format_string(body),
        headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="www-authenticate", value=challenge),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )


def token_mappers() -> list[hcm_pb2.ResponseMapper]:
    """Every 401 mapper of a listener with JWT routes: token checks first, then jwt_authn's."""
    out = [
        unauthorized(
            f"response.code_details == "
            f"{_cel_string(f'rbac_access_denied_matched_policy[{check.name}]')}",
            check.reason,
            check.message,
            INVALID_CHALLENGE,
        )
        for check in TOKEN_CHECKS
    ]
    for status, reason, message in JWT_FAILURES:
        challenge = MISSING_CHALLENGE if reason == "token_missing" else INVALID_CHALLENGE
        condition = f"response.code_details.startsWith({_cel_string(jwt_details(status))})"
        out.append(unauthorized(condition, reason, message, challenge))
    return out


def _is_catch_all(mapper: hcm_pb2.ResponseMapper) -> bool:
    """The listener's last-resort mapper: any response flag, no other condition."""
    flags = mapper.filter.response_flag_filter
    return mapper.filter.HasField("response_flag_filter") and not flags.flags


def insert_mappers(
    hcm: hcm_pb2.HttpConnectionManager, mappers: Iterable[hcm_pb2.ResponseMapper]
) -> None:
    """Put ``mappers`` before the listener's catch-all mapper, keeping their order."""
    existing = list(hcm.local_reply_config.mappers)
    at = next((i for i, m in enumerate(existing) if _is_catch_all(m)), len(existing))
    del hcm.local_reply_config.mappers[:]
    hcm.local_reply_config.mappers.extend([*existing[:at], *mappers, *existing[at:]])
