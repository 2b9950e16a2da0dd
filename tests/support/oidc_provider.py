"""A local OAuth2 / OpenID Connect provider for the browser sign-in tests.

Small, but correct where Envoy's ``oauth2`` filter and a browser meet it: the authorization
code flow (RFC 6749 §4.1) with PKCE (RFC 7636, ``S256`` and ``plain``), client authentication
by ``client_secret_post`` or ``client_secret_basic``, one-time codes bound to their client and
redirect URI, the ``refresh_token`` grant with rotation (the old refresh token dies), RS256
access and ID tokens (``tests.support.tokens``), a JWKS, OpenID discovery and an end-session
endpoint. Consent is automatic: ``/authorize`` signs in :attr:`OidcProvider.subject` at once.

``style="github"`` answers the token endpoint as GitHub's OAuth apps do: no ``expires_in``,
no ``id_token``, no ``refresh_token``, errors as HTTP 200 with an ``error`` member, and a
form-encoded body unless the request asks for JSON (``Accept: application/json``).

It runs in a thread of the test process (stdlib ``http.server``), and records what it was
asked (:attr:`OidcProvider.token_requests`, :attr:`OidcProvider.ended_sessions`) so a test can
tell a refresh from a new sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.tokens import SigningKey, b64url, jwks_of

Style = Literal["oidc", "github"]


@dataclass(frozen=True)
class TokenRequest:
    """One call of the token endpoint, as the provider judged it."""

    grant_type: str
    #: ``client_secret_post``, ``client_secret_basic`` or ``none``.
    client_auth: str
    #: The response's status and, when it failed, its ``error`` code.
    status: int
    error: str | None = None
    accept: str = ""


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    challenge: str | None
    challenge_method: str
    expires: float


@dataclass
class _Grant:
    """What a refresh token stands for."""

    client_id: str
    scope: str
    subject: str


@dataclass
class OidcProvider:
    """The provider; ``start()`` it (or use it as a context manager) before reading ``issuer``."""

    client_id: str
    client_secret: str
    subject: str = "alice"
    #: Seconds an access token lives (``expires_in``); short to test refreshing.
    access_ttl: int = 300
    style: Style = "oidc"
    #: More claims for the ID and access tokens (``email``, ``roles``...).
    claims: dict[str, Any] = field(default_factory=dict)
    token_requests: list[TokenRequest] = field(default_factory=list)
    #: Query parameters of every end-session request.
    ended_sessions: list[dict[str, str]] = field(default_factory=list)
    #: Access tokens issued, in order.
    access_tokens: list[str] = field(default_factory=list)
    #: ID tokens issued, in order.
    id_tokens: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = SigningKey.rsa("idp-1")
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> OidcProvider:
        provider = self

        class Handler(_Handler):
            idp = provider

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- where it is -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the provider first"
        return int(self._server.server_address[1])

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self.issuer}/logout"

    def grants(self, grant_type: str) -> list[TokenRequest]:
        """The token requests of one grant type that succeeded."""
        return [r for r in self.token_requests if r.grant_type == grant_type and r.status == 200]

    # --- the protocol (called by the handler) ------------------------------------------------

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Auto-consent: a code for ``subject``, back to the client's redirect URI."""
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri.startswith("http"):
            # Never redirect to an unverified URI (RFC 6749 §4.1.2.1): an error page instead.
            return 400, {"content-type": "text/plain"}, b"unknown client or bad redirect_uri"
        back: dict[str, str] = {}
        if query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = _Code(
                    client_id=self.client_id,
                    redirect_uri=redirect_uri,
                    scope=query.get("scope", ""),
                    nonce=query.get("nonce"),
                    challenge=query.get("code_challenge"),
                    challenge_method=query.get("code_challenge_method", "plain"),
                    expires=time.time() + 60,
                )
            back["code"] = code
        if "state" in query:
            back["state"] = query["state"]
        sep = "&" if urlsplit(redirect_uri).query else "?"
        return 302, {"location": f"{redirect_uri}{sep}{urlencode(back)}"}, b""

    def token(
        self, form: dict[str, str], authorization: str, accept: str
    ) -> tuple[int, dict[str, str], bytes]:
        grant_type = form.get("grant_type", "")
        auth, client_ok = self._client_auth(form, authorization)
        status, body = 200, {}
        if not client_ok:
            status, body = 401, {"error": "invalid_client"}
        elif grant_type == "authorization_code":
            status, body = self._code_grant(form)
        elif grant_type == "refresh_token" and self.style == "oidc":
            status, body = self._refresh_grant(form)
        else:
            status, body = 400, {"error": "unsupported_grant_type"}
        error = body.get("error") if status != 200 else None
        if self.style == "github" and status != 200:
            # GitHub answers token errors with 200 and an "error" member.
            status = 200
        self.token_requests.append(TokenRequest(grant_type, auth, status, error, accept))
        if self.style == "github" and "application/json" not in accept:
            return (
                status,
                {"content-type": "application/x-www-form-urlencoded"},
                urlencode({k: str(v) for k, v in body.items()}).encode(),
            )
        headers = {"content-type": "application/json", "cache-control": "no-store"}
        return status, headers, json.dumps(body).encode()

    def end_session(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.ended_sessions.append(query)
        target = query.get("post_logout_redirect_uri")
        if target:
            return 302, {"location": target}, b""
        return 200, {"content-type": "text/plain"}, b"signed out"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.jwks_uri,
            "end_session_endpoint": self.end_session_endpoint,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256", "plain"],
        }

    # --- internals ---------------------------------------------------------------------------

    def _client_auth(self, form: dict[str, str], authorization: str) -> tuple[str, bool]:
        if authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:], validate=True).decode()
            except ValueError:
                return "client_secret_basic", False
            client_id, _, secret = raw.partition(":")
            return "client_secret_basic", self._client_matches(client_id, secret)
        if "client_secret" in form:
            return "client_secret_post", self._client_matches(
                form.get("client_id", ""), form["client_secret"]
            )
        return "none", False

    def _client_matches(self, client_id: str, secret: str) -> bool:
        return hmac.compare_digest(client_id.encode(), self.client_id.encode()) and (
            hmac.compare_digest(secret.encode(), self.client_secret.encode())
        )

    def _code_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)  # a code works once
        if code is None or code.expires < time.time():
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if form.get("redirect_uri") != code.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri differs"}
        if self.style == "oidc" and code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if code.challenge_method == "S256":
                expected = b64url(hashlib.sha256(verifier.encode()).digest())
            else:
                expected = verifier
            if not verifier or not hmac.compare_digest(expected, code.challenge):
                return 400, {"error": "invalid_grant", "error_description": "PKCE check failed"}
        return 200, self._tokens(code.scope, code.nonce, with_refresh=True)

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            grant = self._refresh.pop(form.get("refresh_token", ""), None)  # rotation
        if grant is None:
            return 400, {"error": "invalid_grant", "error_description": "unknown refresh token"}
        return 200, self._tokens(grant.scope, None, with_refresh=True)

    def _tokens(self, scope: str, nonce: str | None, with_refresh: bool) -> dict[str, Any]:
        now = int(time.time())
        if self.style == "github":
            access = "gho_" + secrets.token_urlsafe(27)
            self.access_tokens.append(access)
            return {"access_token": access, "token_type": "bearer", "scope": scope}
        base = {"iss": self.issuer, "sub": self.subject, "iat": now, **self.claims}
        access = self.key.sign(
            {
                **base,
                "aud": self.client_id,
                "exp": now + self.access_ttl,
                "scope": scope,
                "jti": secrets.token_hex(8),
            },
            {"typ": "at+jwt"},
        )
        id_claims = {**base, "aud": self.client_id, "exp": now + self.access_ttl}
        if nonce is not None:
            id_claims["nonce"] = nonce
        out: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": scope,
        }
        if "openid" in scope.split():
            out["id_token"] = self.key.sign(id_claims)
            self.id_tokens.append(out["id_token"])
        if with_refresh:
            refresh = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh[refresh] = _Grant(self.client_id, scope, self.subject)
            out["refresh_token"] = refresh
        self.access_tokens.append(access)
        return out


class _Handler(BaseHTTPRequestHandler):
    idp: OidcProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test's output is for its failures."""

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/authorize":
            self._send(*self.idp.authorize(self._query()))
        elif path == "/jwks":
            body = json.dumps(jwks_of(self.idp.key)).encode()
            self._send(200, {"content-type": "application/json"}, body)
        elif path == "/.well-known/openid-configuration":
            body = json.dumps(self.idp.discovery()).encode()
            self._send(200, {"content-type": "application/json"}, body)
        elif path == "/logout":
            self._send(*self.idp.end_session(self._query()))
        else:
            self._send(404, {"content-type": "text/plain"}, b"not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode()
        if urlsplit(self.path).path != "/token":
            self._send(404, {"content-type": "text/plain"}, b"not found")
            return
        if "application/x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            self._send(400, {"content-type": "application/json"}, b'{"error":"invalid_request"}')
            return
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        self._send(
            *self.idp.token(
                form, self.headers.get("authorization", ""), self.headers.get("accept", "")
            )
        )
