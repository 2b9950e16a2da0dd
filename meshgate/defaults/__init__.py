"""Embedded defaults: the quickstart config and the Envoy bootstrap template."""
