"""Header names the ext_authz service shares with Envoy (and later the compiler): one place.

The identity headers it adds upstream are the ones every identity feature uses, so they are
imported from the compiler's :mod:`xds_server.compiler.identity_names`, never respelled.
The per-route context headers carry the ``x-meshgate-`` prefix on purpose: Envoy strips
every client-sent header with that prefix first in every chain, so only Envoy's own route
config can set them and a client cannot choose a laxer policy for itself.
"""

from __future__ import annotations

from xds_server.compiler.identity_names import (
    IDENTITY_HEADER_PREFIX,
    ROLES_HEADER,
    SUBJECT_HEADER,
    TENANT_HEADER,
)

#: The name of the route's policy (for logs and the audit trail; it decides nothing here).
POLICY_HEADER = IDENTITY_HEADER_PREFIX + "authz-policy"
#: The scopes a key must hold on this route, comma-separated; absent or empty: any valid key.
SCOPES_HEADER = IDENTITY_HEADER_PREFIX + "authz-scopes"

#: The key id of the key that was accepted (public, never the key). Named in
#: ``docs/DESIGN.md`` beside the other identity headers but not yet in ``identity_names``.
KEY_ID_HEADER = IDENTITY_HEADER_PREFIX + "key-id"

#: Where a client presents its key: this header, or ``authorization: ApiKey <key>`` or
#: ``authorization: Bearer <key>`` (a bearer token only when it is a meshgate key, so that
#: JWTs on the same header are left to the JWT feature).
API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
WWW_AUTHENTICATE_HEADER = "www-authenticate"
WWW_AUTHENTICATE_VALUE = 'ApiKey realm="meshgate"'

__all__ = [
    "API_KEY_HEADER",
    "AUTHORIZATION_HEADER",
    "KEY_ID_HEADER",
    "POLICY_HEADER",
    "ROLES_HEADER",
    "SCOPES_HEADER",
    "SUBJECT_HEADER",
    "TENANT_HEADER",
    "WWW_AUTHENTICATE_HEADER",
    "WWW_AUTHENTICATE_VALUE",
]
