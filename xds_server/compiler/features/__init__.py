"""The registered compiler features, one module each.

Adding a feature is one module here, one line in :data:`FEATURES` and, if it adds an HTTP
filter, one row in ``xds_server/compiler/filters.py`` (see ``docs/adding-a-feature.md``).
The order of :data:`FEATURES` is the order in which the spine calls their hooks; it matters
only where two features append to the same repeated field, which the goldens pin.
"""

from __future__ import annotations

from xds_server.compiler.feature import Feature
from xds_server.compiler.features.client_address import ClientAddress
from xds_server.compiler.features.client_headers import ClientHeaders
from xds_server.compiler.features.compression import Compression
from xds_server.compiler.features.cors import Cors
from xds_server.compiler.features.ip_rules import IpRules
from xds_server.compiler.features.jwt import Jwt
from xds_server.compiler.features.oauth2 import OAuth2
from xds_server.compiler.features.policy import Policies
from xds_server.compiler.features.protection import Protection
from xds_server.compiler.features.resilience import Resilience
from xds_server.compiler.features.traffic import Traffic

#: Every feature the compiler applies, as stateless instances.
FEATURES: tuple[Feature, ...] = (
    Traffic(),
    Resilience(),
    Cors(),
    Compression(),
    Protection(),
    ClientAddress(),
    ClientHeaders(),
    IpRules(),
    Jwt(),
    OAuth2(),
    # Last: its expand_route turns a route whose policy is unavailable into a 503, after
    # every other feature has had its say about the route.
    Policies(),
)

__all__ = ["FEATURES"]
