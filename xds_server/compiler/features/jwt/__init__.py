"""JWT issuers and policies compiled to Envoy's ``jwt_authn`` (see ``feature.py``)."""

from xds_server.compiler.features.jwt.feature import Jwt

__all__ = ["Jwt"]
