"""The control plane's JWKS manager: issuers' signing keys fetched, kept and served to Envoy.

Envoy never fetches keys itself: the control plane reads each issuer's JWKS (a URL or a file),
validates it, keeps the last good set in memory and on disk, and hands it to the compiler
(``CompileContext.jwks``), which puts it into the Envoy config. So tokens keep passing while
the identity provider is down, also after a control-plane restart, up to ``max_stale``.

``source`` (what the compile job reports) and ``document`` are imported by the compile
worker; nothing here may import the HTTP client at package level.
"""
