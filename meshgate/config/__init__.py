"""The declarative gateway config: what operators write and every later feature extends.

Pydantic v2 models with ``extra="forbid"`` so a typo is an error, not a silently ignored key.
Cross-references (a route naming a service that does not exist, two virtual hosts claiming the
same domain) are checked by :func:`reference_errors`, which returns one precise path per
mistake instead of stopping at the first. The models are plain data: no I/O, no defaults read
from the environment, so the compiler that consumes them stays a pure function.

One module per concept: ``values`` (durations, names, ports...), ``regex`` (RE2 rules),
``routes``, ``services``, ``gateway`` (the file's top level) and ``references``.
"""

from .gateway import DemoUpstream, GatewayConfig, Listener
from .references import Issue, reference_errors, route_name
from .regex import Regex, check_regex
from .routes import DirectResponse, HeaderMatch, Route, RouteMatch, VirtualHost
from .services import Endpoint, Service
from .values import (
    HTTP_METHODS,
    MAX_DIRECT_RESPONSE_BODY_BYTES,
    MAX_DURATION_SECONDS,
    Duration,
    HttpMethod,
    IpAddress,
    Model,
    Name,
    Port,
    parse_duration,
)

__all__ = [
    "HTTP_METHODS",
    "MAX_DIRECT_RESPONSE_BODY_BYTES",
    "MAX_DURATION_SECONDS",
    "DemoUpstream",
    "DirectResponse",
    "Duration",
    "Endpoint",
    "GatewayConfig",
    "HeaderMatch",
    "HttpMethod",
    "IpAddress",
    "Issue",
    "Listener",
    "Model",
    "Name",
    "Port",
    "Regex",
    "Route",
    "RouteMatch",
    "Service",
    "VirtualHost",
    "check_regex",
    "parse_duration",
    "reference_errors",
    "route_name",
]
