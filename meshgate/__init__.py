"""meshgate: an API gateway and mesh extension on real Envoy."""

__version__ = "0.1.0"
