"""Browser sign-in through real Envoy, the real control plane and a local identity provider.

One gateway serves every test of the module: an OpenID Connect login for the whole virtual
host (``corp``), one whose access tokens live two seconds (``short``, for refreshing), one on a
provider that answers like GitHub (``gh``), a public health route, and a second virtual host
(``localhost:<port>``) where ``corp``'s ID token feeds a JWT policy with a role. The browser is
:class:`tests.support.browser.Browser`: cookies kept per host, redirects followed one by one.
The secrets reach the control plane from a file and an environment variable, and Envoy over
SDS; the last tests look for them everywhere the run wrote something.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from meshgate.proxy.envoy_process import free_port
from tests.support.browser import Browser
from tests.support.oidc_provider import OidcProvider

from .harness import ControlPlane, Envoy, Upstreams, wait_until, write_config

pytestmark = pytest.mark.integration

CLIENT_SECRET = "s3cret-client-9f1c2a7be04d4c1f"
HMAC_SECRET = "hmac-6f0e2b1d9c8a7f6e5d4c3b2a1908f7e6d5c4b3a2"
SHORT_HMAC = "hmac-short-6f0e2b1d9c8a7f6e5d4c3b2a1908f7e6d5c4"
ROTATED_CLIENT_SECRET = "s3cret-rotated-5b7d0e9a3c1f"
ALICE = {"email": "alice@example.com", "roles": ["staff"]}
HMAC_ENV = "MESHGATE_TEST_LOGIN_HMAC"


@dataclass
class Gateway:
    base: str
    cp: ControlPlane
    envoy: Envoy
    corp: OidcProvider
    short: OidcProvider
    gh: OidcProvider
    config_path: Path
    #: The gh login's client secret, which a test rotates.
    gh_secret_file: Path


def _login(name: str, idp: OidcProvider, secret: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "oidc",
        "client_id": idp.client_id,
        "client_secret": {"file": secret["gh-client" if name == "gh" else "client"]},
        "hmac_secret": {"env": HMAC_ENV} if name == "corp" else {"file": secret["hmac"]},
        "authorization_endpoint": idp.authorization_endpoint,
        "token_endpoint": idp.token_endpoint,
        **extra,
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("oauth2")
    corp = OidcProvider("gateway", CLIENT_SECRET, claims=dict(ALICE)).start()
    short = OidcProvider("gateway-short", CLIENT_SECRET, access_ttl=2).start()
    gh = OidcProvider("Iv1.gh", CLIENT_SECRET, style="github").start()
    client_file = tmp / "client-secret"
    client_file.write_text(CLIENT_SECRET + "\n")
    gh_client_file = tmp / "gh-client-secret"
    gh_client_file.write_text(CLIENT_SECRET)
    hmac_file = tmp / "short-hmac"
    hmac_file.write_text(SHORT_HMAC)
    files = {"client": str(client_file), "gh-client": str(gh_client_file), "hmac": str(hmac_file)}
    upstreams = Upstreams(["web"])
    port = free_port()
    routes = [
        {"name": "health", "match": {"path": "/healthz"}, "public": True, "service": "web"},
        {"name": "short", "match": {"prefix": "/short/"}, "service": "web", "login": "short"},
        {"name": "gh", "match": {"prefix": "/gh/"}, "service": "web", "login": "gh"},
        {"name": "pages", "match": {"prefix": "/"}, "service": "web"},
    ]
    config = {
        "listeners": [
            {
                "name": "public",
                "address": "127.0.0.1",
                "port": port,
                "virtual_hosts": [
                    # The ID token of the same login feeds a JWT policy on every route here.
                    {
                        "name": "staff",
                        "domains": [f"localhost:{port}"],
                        "login": "corp",
                        "policy": "staff-only",
                        "routes": [{"name": "team", "match": {"prefix": "/"}, "service": "web"}],
                    },
                    {"name": "app", "login": "corp", "routes": routes},
                ],
            }
        ],
        "logins": [
            _login(
                "corp",
                corp,
                files,
                end_session_endpoint=corp.end_session_endpoint,
                scopes=["openid", "email"],
            ),
            _login("short", short, files, redirect_path="/short/cb", signout_path="/short/out"),
            {
                **_login("gh", gh, files, redirect_path="/gh/cb", signout_path="/gh/out"),
                "provider": "github",
            },
        ],
        "issuers": [
            {
                "name": "corp-id",
                "issuer": corp.issuer,
                "audiences": corp.client_id,
                "jwks": {"url": corp.jwks_uri},  # fetched by the control plane
                "tokens": [{"cookie": "IdToken-corp"}],
                "forward_token": True,
            }
        ],
        "roles": [{"name": "staff", "permissions": [{"paths": ["/**"]}]}],
        "policies": [{"name": "staff-only", "issuers": ["corp-id"], "roles": ["staff"]}],
        "services": [
            {"name": "web", "endpoints": [{"address": "127.0.0.1", "port": upstreams.ports["web"]}]}
        ],
    }
    config_path = tmp / "gateway.yaml"
    write_config(config_path, config)
    os.environ[HMAC_ENV] = HMAC_SECRET  # inherited by the control plane it starts
    cp = ControlPlane(config_path)
    envoy = Envoy(cp.xds_port, keep_log=True)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _status(base, "/healthz") == 200, 20, "the gateway to serve")
    yield Gateway(base, cp, envoy, corp, short, gh, config_path, gh_client_file)
    envoy.stop()
    cp.stop()
    upstreams.stop()
    for idp in (corp, short, gh):
        idp.stop()
    os.environ.pop(HMAC_ENV, None)


def _status(base: str, path: str) -> int:
    return Browser().get(base + path).status_code


def _sign_in(gw: Gateway, path: str = "/reports?week=3") -> tuple[Browser, dict[str, Any]]:
    browser = Browser()
    final = browser.navigate(gw.base + path)
    assert final.status_code == 200, [(h.status_code, str(h.url)) for h in browser.hops]
    return browser, final.json()


def _upstream_saw(response: Any) -> dict[str, str]:
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return headers


# --- the flow ---------------------------------------------------------------------------------


def test_sign_in_redirect_callback_cookie_and_bearer_token_upstream(gw: Gateway) -> None:
    browser, seen = _sign_in(gw)
    to_idp, back, to_page, page = browser.hops
    # 1. Envoy sends the browser to the provider, PKCE and state included
    assert to_idp.status_code == 302
    authorize = urlsplit(to_idp.headers["location"])
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == (
        gw.corp.authorization_endpoint
    )
    query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    assert query["client_id"] == "gateway"
    assert query["response_type"] == "code"
    assert query["scope"] == "openid email"
    assert query["redirect_uri"] == f"{gw.base}/oauth2/callback"
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["state"]
    # 2. the provider sends it back to the callback with a code
    assert back.status_code == 302
    assert back.headers["location"].startswith(f"{gw.base}/oauth2/callback?code=")
    # 3. Envoy exchanged the code (client secret in the form body) and sets the session
    assert to_page.status_code == 302
    assert to_page.headers["location"] == f"{gw.base}/reports?week=3"
    assert gw.corp.grants("authorization_code")[-1].client_auth == "client_secret_post"
    session = browser.jar[urlsplit(gw.base).netloc]
    assert {"BearerToken-corp", "IdToken-corp", "RefreshToken-corp", "OauthHMAC-corp"} <= set(
        session
    )
    for cookie in session.values():
        assert "httponly" in cookie.attributes and "secure" in cookie.attributes
        assert cookie.attributes["samesite"] == "Lax"
    # the browser's cookies hold the tokens encrypted, never as issued
    assert session["BearerToken-corp"].value != gw.corp.access_tokens[-1]
    # 4. the page: the upstream got the access token, and not the refresh token
    assert page.status_code == 200
    assert seen["path"] == "/reports" and seen["query"] == "week=3"
    assert seen["headers"]["authorization"] == f"Bearer {gw.corp.access_tokens[-1]}"
    upstream_cookies = seen["headers"].get("cookie", "")
    assert "RefreshToken-corp" not in upstream_cookies
    # documented in security.md: Envoy passes the decrypted access and ID tokens on as cookies
    assert f"BearerToken-corp={gw.corp.access_tokens[-1]}" in upstream_cookies
    assert f"IdToken-corp={gw.corp.id_tokens[-1]}" in upstream_cookies


def test_a_signed_in_browser_is_not_sent_to_the_provider_again(gw: Gateway) -> None:
    browser, _ = _sign_in(gw)
    exchanges = len(gw.corp.grants("authorization_code"))
    response = browser.get(gw.base + "/other")
    assert _upstream_saw(response)["authorization"].startswith("Bearer ")
    assert len(gw.corp.grants("authorization_code")) == exchanges


def test_a_client_sent_authorization_header_never_reaches_the_upstream(gw: Gateway) -> None:
    forged = {"authorization": "Bearer forged-by-the-client"}
    stranger = Browser().get(gw.base + "/reports", headers=forged)
    assert stranger.status_code == 302  # no session: to the provider, not upstream
    browser, _ = _sign_in(gw)
    seen = _upstream_saw(browser.get(gw.base + "/reports", headers=forged))
    assert seen["authorization"] == f"Bearer {gw.corp.access_tokens[-1]}"


def test_a_public_route_needs_no_sign_in(gw: Gateway) -> None:
    response = Browser().get(gw.base + "/healthz")
    assert response.status_code == 200
    assert "authorization" not in response.json()["headers"]


def test_a_tampered_cookie_sends_the_browser_to_sign_in_again(gw: Gateway) -> None:
    browser, _ = _sign_in(gw)
    host = urlsplit(gw.base).netloc
    del browser.jar[host]["RefreshToken-corp"]  # no way around a new sign-in
    later = str(int(time.time()) + 30 * 24 * 3600)
    browser.set_cookie(gw.base, "OauthExpires-corp", later)  # extend the session by hand
    response = browser.get(gw.base + "/reports")
    assert response.status_code == 302
    assert response.headers["location"].startswith(gw.corp.authorization_endpoint)


def test_a_forged_session_is_refused(gw: Gateway) -> None:
    """Cookies made up by the client (a token, an expiry, an HMAC under a guessed key)."""
    forged = {
        "BearerToken-corp": "forged-token",
        "OauthExpires-corp": str(int(time.time()) + 3600),
        "OauthHMAC-corp": "bm90IGEgcmVhbCBobWFj",
    }
    response = Browser().get(
        gw.base + "/reports", headers={"cookie": "; ".join(f"{k}={v}" for k, v in forged.items())}
    )
    assert response.status_code == 302
    assert response.headers["location"].startswith(gw.corp.authorization_endpoint)


def test_a_tampered_token_with_a_good_refresh_token_is_replaced_not_forwarded(
    gw: Gateway,
) -> None:
    browser, _ = _sign_in(gw)
    refreshes = len(gw.corp.grants("refresh_token"))
    browser.set_cookie(gw.base, "BearerToken-corp", "tampered" + "A" * 40)
    seen = _upstream_saw(browser.get(gw.base + "/reports"))
    assert len(gw.corp.grants("refresh_token")) == refreshes + 1
    assert seen["authorization"] == f"Bearer {gw.corp.access_tokens[-1]}"
    assert "tampered" not in json.dumps(seen)


def test_an_expired_access_token_is_refreshed_without_a_new_sign_in(gw: Gateway) -> None:
    browser, first = _sign_in(gw, "/short/page")
    first_token = first["headers"]["authorization"]
    assert first_token == f"Bearer {gw.short.access_tokens[-1]}"
    sign_ins = len(gw.short.grants("authorization_code"))
    time.sleep(2.5)  # the access token lives 2 s; the refresh token much longer
    response = browser.get(gw.base + "/short/page")
    seen = _upstream_saw(response)  # straight to the page: no redirect
    assert len(gw.short.grants("authorization_code")) == sign_ins
    assert gw.short.grants("refresh_token"), "Envoy did not use the refresh token"
    assert seen["authorization"] == f"Bearer {gw.short.access_tokens[-1]}"
    assert seen["authorization"] != first_token
    # the filters after oauth2 (jwt_authn) already see the renewed ID token in this request
    assert f"IdToken-short={gw.short.id_tokens[-1]}" in seen["cookie"]
    assert "BearerToken-short" in {
        h.split("=", 1)[0] for h in response.headers.get_list("set-cookie")
    }
    # and the renewed session is used as such
    again = _upstream_saw(browser.get(gw.base + "/short/page"))
    assert again["authorization"] == seen["authorization"]


def test_a_refresh_the_provider_refuses_means_signing_in_again(gw: Gateway) -> None:
    browser, _ = _sign_in(gw, "/short/page")
    stale = {host: dict(cookies) for host, cookies in browser.jar.items()}
    time.sleep(2.5)
    _upstream_saw(browser.get(gw.base + "/short/page"))  # refreshed: the old one is spent
    browser.jar = stale  # a copy of the cookies from before, with the spent refresh token
    time.sleep(0.1)
    response = browser.get(gw.base + "/short/page")
    assert response.status_code == 302
    assert response.headers["location"].startswith(gw.short.authorization_endpoint)


def test_sign_out_clears_the_cookies_and_ends_the_provider_session(gw: Gateway) -> None:
    browser, _ = _sign_in(gw)
    response = browser.get(gw.base + "/oauth2/signout")
    assert response.status_code == 302
    logout = urlsplit(response.headers["location"])
    assert f"{logout.scheme}://{logout.netloc}{logout.path}" == gw.corp.end_session_endpoint
    query = {k: v[0] for k, v in parse_qs(logout.query).items()}
    assert query["client_id"] == "gateway"
    assert query["id_token_hint"].count(".") == 2  # the ID token, so the provider knows whom
    assert query["post_logout_redirect_uri"] == f"{gw.base}/"
    deleted = {
        h.split("=", 1)[0]
        for h in response.headers.get_list("set-cookie")
        if "expires=Thu, 01 Jan 1970" in h
    }
    assert {"BearerToken-corp", "IdToken-corp", "RefreshToken-corp", "OauthHMAC-corp"} <= deleted
    assert browser.cookies(gw.base) == {}
    again = browser.get(gw.base + "/reports")
    assert again.status_code == 302
    assert again.headers["location"].startswith(gw.corp.authorization_endpoint)


def test_a_github_style_provider(gw: Gateway) -> None:
    """JSON only when asked for it, no expires_in, no refresh or ID token: the default
    lifetime makes a session of it."""
    browser, seen = _sign_in(gw, "/gh/repos")
    [exchange] = gw.gh.grants("authorization_code")[-1:]
    assert "application/json" in exchange.accept
    assert seen["headers"]["authorization"] == f"Bearer {gw.gh.access_tokens[-1]}"
    assert gw.gh.access_tokens[-1].startswith("gho_")
    session = browser.jar[urlsplit(gw.base).netloc]
    expires = int(session["OauthExpires-gh"].value)
    assert 3500 < expires - time.time() <= 3600
    assert "RefreshToken-gh" not in session and "IdToken-gh" not in session


def test_logins_on_one_host_keep_their_own_cookies(gw: Gateway) -> None:
    browser, _ = _sign_in(gw)
    sign_ins = len(gw.gh.grants("authorization_code"))
    response = browser.navigate(gw.base + "/gh/x")  # corp's cookies do not sign in to gh
    assert response.status_code == 200
    assert len(gw.gh.grants("authorization_code")) == sign_ins + 1
    # and corp's session is still there
    assert _upstream_saw(browser.get(gw.base + "/reports"))["authorization"] == (
        f"Bearer {gw.corp.access_tokens[-1]}"
    )


def test_the_id_token_feeds_a_jwt_policy_on_the_same_routes(gw: Gateway) -> None:
    """The oauth2 filter signs the browser in; jwt_authn verifies the ID token it hands on in
    the IdToken cookie; the policy's roles decide. The callback itself needs no token."""
    staff = gw.base.replace("127.0.0.1", "localhost")

    def signed_in_page() -> Any:  # the control plane fetches the provider's keys at start
        page = Browser().navigate(staff + "/team")
        return page if page.status_code == 200 else None

    page = wait_until(signed_in_page, 15, "the ID token to pass the JWT policy")
    seen = page.json()["headers"]
    assert seen["x-meshgate-subject"] == "alice"
    assert "staff" in seen["x-meshgate-roles"]
    gw.corp.claims = {**ALICE, "roles": ["visitor"]}  # someone signed in without the role
    try:
        denied = Browser().navigate(staff + "/team")
    finally:
        gw.corp.claims = dict(ALICE)
    assert denied.status_code == 403
    assert Browser().get(staff + "/team").status_code == 302  # no session: sign in first


# --- secrets: rotated over SDS, shown nowhere -------------------------------------------------


def _listener_version(envoy: Envoy) -> str:
    dump = json.loads(envoy.process.admin_get("/config_dump?resource=dynamic_listeners"))
    [listener] = [c for c in dump["configs"] if c["name"] == "public"]
    return str(listener["active_state"]["version_info"])


def test_a_rotated_client_secret_reaches_envoy_without_a_listener_update(gw: Gateway) -> None:
    _sign_in(gw, "/gh/before")
    listener = _listener_version(gw.envoy)
    gw.gh.client_secret = ROTATED_CLIENT_SECRET  # the provider now wants the new one
    # written in place; the config is not touched (the control plane watches the secret file)
    gw.gh_secret_file.write_text(ROTATED_CLIENT_SECRET)

    def signs_in() -> bool:
        return Browser().navigate(gw.base + "/gh/after").status_code == 200

    wait_until(signs_in, 20, "a sign-in with the rotated client secret")
    assert _listener_version(gw.envoy) == listener  # only SDS changed: nothing drained


def _everything_the_run_wrote(gw: Gateway) -> dict[str, str]:
    env = {**os.environ, HMAC_ENV: HMAC_SECRET}
    meshgate = [
        sys.executable,
        "-c",
        "import sys; from meshgate.cli.entry import main; sys.exit(main())",
    ]
    status = subprocess.run(
        [*meshgate, "status", "--url", gw.cp.admin_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    render = subprocess.run(
        [*meshgate, "render", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    return {
        "control plane log": gw.cp.logs(),
        "control plane /status": gw.cp.get("/status")[1],
        "control plane /metrics": gw.cp.get("/metrics")[1],
        "meshgate status": status.stdout + status.stderr,
        "meshgate render": render.stdout + render.stderr,
        "envoy log": gw.envoy.logs(),
        "envoy /config_dump": gw.envoy.process.admin_get("/config_dump?include_eds"),
        "envoy /stats": gw.envoy.process.admin_get("/stats"),
    }


def test_the_secrets_appear_nowhere(gw: Gateway) -> None:
    _sign_in(gw)  # a whole flow first, so its logs are there too
    outputs = _everything_the_run_wrote(gw)
    dump = json.loads(outputs["envoy /config_dump"])
    secret_types = [c for c in dump["configs"] if c["@type"].endswith("SecretsConfigDump")]
    assert secret_types, "Envoy's config dump should list the SDS secrets"
    names = json.dumps(secret_types)
    assert "meshgate/login/corp/client_secret" in names
    assert "meshgate/login/corp/hmac_secret" in names
    for where, text in outputs.items():
        for secret in (CLIENT_SECRET, HMAC_SECRET, SHORT_HMAC, ROTATED_CLIENT_SECRET):
            assert secret not in text, f"a secret value is in the {where}"
