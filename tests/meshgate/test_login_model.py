"""The ``logins`` model: presets, endpoint and scope checks, secrets never in the config.

Each mistake's exact message is pinned by a fixture in ``tests/fixtures/invalid/login_*``;
these tests cover the rules across more values than one fixture each.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshgate.config.identity import Login, SecretRef
from meshgate.config.login_presets import check_endpoint, is_loopback


def _login(**fields: Any) -> Login:
    base: dict[str, Any] = {
        "name": "corp",
        "provider": "oidc",
        "client_id": "gateway",
        "client_secret": {"env": "CLIENT_SECRET"},
        "hmac_secret": {"file": "/run/secrets/hmac"},
        "authorization_endpoint": "https://id.example.com/authorize",
        "token_endpoint": "https://id.example.com/token",
    }
    return Login.model_validate({**base, **fields})


@pytest.mark.parametrize(
    "host", ["localhost", "app.localhost", "127.0.0.1", "127.8.9.10", "::1", "LOCALHOST"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1", "localhost.example.com", "::2"])
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "url",
    [
        "https://id.example.com/token",
        "https://id.example.com:8443/realms/a/token?x=1",
        "http://127.0.0.1:9000/token",
        "http://localhost/token",
        "http://[::1]:9000/token",
    ],
)
def test_endpoints_accepted(url: str) -> None:
    assert check_endpoint(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://id.example.com/token", "use https"),
        ("ftp://id.example.com/token", "not an absolute http"),
        ("https:///token", "not an absolute http"),
        ("https://user:pw@id.example.com/token", "credentials do not belong"),
        ("https://id.example.com/token#x", "fragment"),
        ("https://id.example.com/a b", "spaces"),
        ("https://id.example.com:99999/token", "port"),
    ],
)
def test_endpoints_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_endpoint(url)


def test_presets_fill_what_the_config_leaves_out() -> None:
    google = _login(provider="google", authorization_endpoint=None, token_endpoint=None)
    assert google.effective_token_endpoint() == "https://oauth2.googleapis.com/token"
    assert google.effective_scopes() == ["openid", "email", "profile"]
    assert google.is_oidc()
    github = _login(provider="github", authorization_endpoint=None, token_endpoint=None)
    assert github.effective_authorization_endpoint() == "https://github.com/login/oauth/authorize"
    assert github.effective_scopes() == ["read:user", "user:email"]
    assert not github.is_oidc()
    assert github.effective_end_session_endpoint() is None


def test_oidc_defaults_to_the_openid_scope_only() -> None:
    assert _login().effective_scopes() == ["openid"]


def test_scopes_once_each() -> None:
    with pytest.raises(ValidationError, match="each scope once"):
        _login(scopes=["openid", "openid"])


@pytest.mark.parametrize("path", ["/cb?x=1", "/cb#x", "cb", "/a b"])
def test_login_paths_are_plain_paths(path: str) -> None:
    with pytest.raises(ValidationError):
        _login(redirect_path=path)


def test_a_secret_is_read_from_one_place_and_named_by_it() -> None:
    assert SecretRef(env="X").key() == "env:X"
    assert SecretRef(file="/run/s").key() == "file:/run/s"
    with pytest.raises(ValidationError, match="exactly one of 'env', 'file'"):
        SecretRef()


@pytest.mark.parametrize("value", ["the-secret-itself", 12345])
def test_a_secret_value_in_the_config_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="a secret is never written in the config"):
        _login(client_secret=value)
