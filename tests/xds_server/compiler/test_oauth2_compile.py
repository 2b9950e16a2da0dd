"""The oauth2 compiler feature without Envoy running traffic.

The goldens pin whole outputs; these tests pin the rules behind them: one filter per login,
switched on only by the routes that use it; the login's own callback and sign-out routes; the
secrets only as SDS references (their values in SDS resources, never in a filter config);
the presets; the token endpoint's cluster; the cookie settings; and the errors when a secret is
missing or too weak.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.oauth2.v3 import oauth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from meshgate.config import GatewayConfig
from meshgate.loader import ConfigError, parse_config
from tests.paths import ROOT, TESTS
from tests.support.compile_inputs import placeholder_secrets
from tests.test_docs_examples import examples
from xds_server.compiler import compile_snapshot
from xds_server.compiler.features.oauth2 import (
    DEFAULT_EXPIRES_IN,
    MIN_HMAC_SECRET_BYTES,
    SYSTEM_CA_BUNDLE,
)
from xds_server.compiler.secrets import MissingSecretError
from xds_server.publish.validation import ValidateModeValidator
from xds_server.snapshot.snapshot import (
    CLUSTER,
    LISTENER,
    ROUTE,
    SECRET,
    InconsistentSnapshotError,
)

CLIENT_SECRET = "client-secret-value-3f9a1c"
HMAC_SECRET = "hmac-secret-value-0123456789abcdef-0123456789"
SECRETS = {"env:CLIENT_SECRET": CLIENT_SECRET, "env:HMAC_SECRET": HMAC_SECRET}


def _login(name: str = "corp", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "google",
        "client_id": "1234.apps.googleusercontent.com",
        "client_secret": {"env": "CLIENT_SECRET"},
        "hmac_secret": {"env": "HMAC_SECRET"},
        **fields,
    }


def _config(
    routes: list[dict[str, Any]] | None = None,
    logins: list[dict[str, Any]] | None = None,
    **vhost: Any,
) -> GatewayConfig:
    text = yaml.safe_dump(
        {
            "listeners": [
                {
                    "name": "public",
                    "port": 8080,
                    "virtual_hosts": [
                        {
                            "name": "app",
                            "routes": routes
                            or [{"name": "r", "match": {"prefix": "/"}, "service": "web"}],
                            **vhost,
                        }
                    ],
                }
            ],
            "logins": [_login()] if logins is None else logins,
            "services": [{"name": "web", "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
        }
    )
    return parse_config(text).config


def _chain(config: GatewayConfig) -> list[hcm_pb2.HttpFilter]:
    listener = compile_snapshot(config, secrets=SECRETS).of_type(LISTENER)["public"].unpack()
    assert isinstance(listener, listener_pb2.Listener)
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    return list(hcm.http_filters)


def _oauth2(config: GatewayConfig, login: str = "corp") -> oauth_pb2.OAuth2Config:
    [flt] = [f for f in _chain(config) if f.name == f"envoy.filters.http.oauth2.{login}"]
    msg = oauth_pb2.OAuth2()
    flt.typed_config.Unpack(msg)
    return msg.config


def _routes(config: GatewayConfig) -> list[rc_pb2.Route]:
    rc = compile_snapshot(config, secrets=SECRETS).of_type(ROUTE)["public"].unpack()
    assert isinstance(rc, route_pb2.RouteConfiguration)
    return list(rc.virtual_hosts[0].routes)


def _enabled(route: rc_pb2.Route) -> list[str]:
    """The per-filter configs that switch a filter on (not the ones that switch it off)."""
    out = []
    for name, packed in route.typed_per_filter_config.items():
        fc = rc_pb2.FilterConfig()
        if packed.Unpack(fc) and not fc.disabled:
            out.append(name)
    return sorted(out)


# --- who gets the filter ----------------------------------------------------------------------


def test_no_login_pays_for_nothing() -> None:
    config = _config(logins=[_login()])  # defined, attached nowhere
    snapshot = compile_snapshot(config)  # and its secrets are not needed
    assert not [f.name for f in _chain(config) if "oauth2" in f.name]
    assert set(snapshot.of_type(CLUSTER)) == {"web"}
    assert snapshot.of_type(SECRET) == {}


def test_one_disabled_filter_per_login_switched_on_by_its_routes() -> None:
    config = _config(
        routes=[
            {"name": "health", "match": {"path": "/healthz"}, "public": True, "service": "web"},
            {"name": "ops", "match": {"prefix": "/ops/"}, "service": "web", "login": "ops"},
            {"name": "pages", "match": {"prefix": "/"}, "service": "web"},
        ],
        logins=[_login(), _login("ops", redirect_path="/ops/cb", signout_path="/ops/out")],
        login="corp",
    )
    chain = [f for f in _chain(config) if "oauth2" in f.name or "router" in f.name]
    assert [(f.name, f.disabled) for f in chain] == [
        ("envoy.filters.http.oauth2.corp", True),
        ("envoy.filters.http.oauth2.ops", True),
        ("envoy.filters.http.router", False),
    ]
    by_name = {r.name: _enabled(r) for r in _routes(config)}
    assert by_name == {
        "oauth2-corp-callback": ["envoy.filters.http.oauth2.corp"],
        "oauth2-corp-signout": ["envoy.filters.http.oauth2.corp"],
        "oauth2-ops-callback": ["envoy.filters.http.oauth2.ops"],
        "oauth2-ops-signout": ["envoy.filters.http.oauth2.ops"],
        "health": [],  # public: no sign-in
        "ops": ["envoy.filters.http.oauth2.ops"],  # its own login replaces the host's
        "pages": ["envoy.filters.http.oauth2.corp"],
    }


def test_login_paths_come_first_and_never_reach_an_upstream() -> None:
    config = _config(
        routes=[{"name": "all", "match": {"prefix": "/"}, "service": "web"}], login="corp"
    )
    routes = _routes(config)
    assert [(r.name, r.match.path) for r in routes[:2]] == [
        ("oauth2-corp-callback", "/oauth2/callback"),
        ("oauth2-corp-signout", "/oauth2/signout"),
    ]
    assert all(
        r.HasField("direct_response") and r.direct_response.status == 404 for r in routes[:2]
    )
    assert routes[2].name == "all"


def test_login_paths_switch_the_policy_filters_off_where_a_policy_applies() -> None:
    """The oauth2 filter answers the callback itself; a JWT check there would refuse every
    browser coming back from the provider (it has no token yet)."""
    config = parse_config(
        yaml.safe_dump(
            {
                "listeners": [
                    {
                        "name": "public",
                        "port": 8080,
                        "virtual_hosts": [
                            {
                                "name": "app",
                                "login": "corp",
                                "policy": "p",
                                "routes": [{"match": {"prefix": "/"}, "service": "web"}],
                            }
                        ],
                    }
                ],
                "logins": [_login()],
                "issuers": [
                    {
                        "name": "idp",
                        "issuer": "https://id.example.com",
                        "audiences": "gateway",
                        "jwks": {"url": "https://id.example.com/jwks"},
                    }
                ],
                "policies": [{"name": "p", "issuers": ["idp"]}],
                "services": [{"name": "web", "endpoints": [{"address": "10.0.0.1", "port": 80}]}],
            }
        )
    ).config
    callback = _routes(config)[0]
    off = []
    for name, packed in callback.typed_per_filter_config.items():
        fc = rc_pb2.FilterConfig()
        packed.Unpack(fc)
        if fc.disabled:
            off.append(name)
    assert sorted(off) == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.token",
    ]


# --- the filter's settings --------------------------------------------------------------------


def test_google_preset() -> None:
    cfg = _oauth2(_config(login="corp"))
    assert cfg.authorization_endpoint == "https://accounts.google.com/o/oauth2/v2/auth"
    assert cfg.token_endpoint.uri == "https://oauth2.googleapis.com/token"
    assert cfg.token_endpoint.cluster == "oauth2/corp"
    assert list(cfg.auth_scopes) == ["openid", "email", "profile"]
    assert cfg.end_session_endpoint == ""  # Google has no end-session endpoint


def test_github_preset_always_names_its_scopes() -> None:
    """Envoy's default scope is 'user' (read and write on a GitHub profile): never sent."""
    cfg = _oauth2(_config(logins=[_login(provider="github")], login="corp"))
    assert cfg.authorization_endpoint == "https://github.com/login/oauth/authorize"
    assert cfg.token_endpoint.uri == "https://github.com/login/oauth/access_token"
    assert list(cfg.auth_scopes) == ["read:user", "user:email"]


def test_explicit_endpoints_win_over_the_preset() -> None:
    """GitHub Enterprise Server: GitHub's protocol on another host."""
    login = _login(
        provider="github",
        authorization_endpoint="https://git.corp.example/login/oauth/authorize",
        token_endpoint="https://git.corp.example/login/oauth/access_token",
        scopes=["read:user"],
    )
    cfg = _oauth2(_config(logins=[login], login="corp"))
    assert cfg.authorization_endpoint == "https://git.corp.example/login/oauth/authorize"
    assert cfg.token_endpoint.uri == "https://git.corp.example/login/oauth/access_token"
    assert list(cfg.auth_scopes) == ["read:user"]


def test_a_provider_without_expires_in_still_gets_a_session() -> None:
    """GitHub's OAuth apps send no expires_in; without a default Envoy refuses the token."""
    cfg = _oauth2(_config(login="corp"))
    assert cfg.default_expires_in.ToTimedelta() == DEFAULT_EXPIRES_IN


def test_redirect_uri_paths_and_flags() -> None:
    login = _login(
        redirect_path="/auth/cb",
        signout_path="/auth/out",
        forward_token=False,
        use_refresh_token=False,
    )
    cfg = _oauth2(_config(logins=[login], login="corp"))
    assert cfg.redirect_uri == "%REQ(x-forwarded-proto)%://%REQ(:authority)%/auth/cb"
    assert cfg.redirect_path_matcher.path.exact == "/auth/cb"
    assert cfg.signout_path.path.exact == "/auth/out"
    assert cfg.forward_bearer_token is False
    assert cfg.use_refresh_token.value is False
    assert cfg.stat_prefix == "corp."


def test_cookies_are_named_per_login_and_same_site_lax() -> None:
    cfg = _oauth2(_config(login="corp"))
    names = cfg.credentials.cookie_names
    assert (names.bearer_token, names.id_token, names.oauth_hmac) == (
        "BearerToken-corp",
        "IdToken-corp",
        "OauthHMAC-corp",
    )
    assert all(getattr(names, f.name) for f in names.DESCRIPTOR.fields)  # every one is named
    configs = cfg.cookie_configs
    for field in configs.DESCRIPTOR.fields:  # every cookie Envoy sets, the flow's ones too
        assert getattr(configs, field.name).same_site == oauth_pb2.CookieConfig.LAX, field.name


# --- secrets over SDS -------------------------------------------------------------------------


def test_secrets_are_sds_references_and_their_values_only_in_secret_resources() -> None:
    config = _config(login="corp")
    snapshot = compile_snapshot(config, secrets=SECRETS)
    creds = _oauth2(config).credentials
    assert creds.token_secret.name == "meshgate/login/corp/client_secret"
    assert creds.hmac_secret.name == "meshgate/login/corp/hmac_secret"
    assert creds.token_secret.sds_config.HasField("ads")
    assert creds.hmac_secret.sds_config.HasField("ads")
    values = {}
    for name, res in snapshot.of_type(SECRET).items():
        secret = secret_pb2.Secret()
        res.any.Unpack(secret)
        assert secret.name == name
        values[name] = secret.generic_secret.secret.inline_string
    assert values == {
        "meshgate/login/corp/client_secret": CLIENT_SECRET,
        "meshgate/login/corp/hmac_secret": HMAC_SECRET,
    }
    for type_url in (CLUSTER, LISTENER, ROUTE):
        for res in snapshot.of_type(type_url).values():
            assert CLIENT_SECRET.encode() not in res.any.value
            assert HMAC_SECRET.encode() not in res.any.value


def test_a_secret_shared_by_two_logins_is_served_to_each() -> None:
    logins = [_login(), _login("ops", redirect_path="/o/cb", signout_path="/o/out")]
    routes = [
        {"name": "a", "match": {"prefix": "/a"}, "service": "web", "login": "corp"},
        {"name": "b", "match": {"prefix": "/b"}, "service": "web", "login": "ops"},
    ]
    snapshot = compile_snapshot(_config(routes=routes, logins=logins), secrets=SECRETS)
    assert sorted(snapshot.of_type(SECRET)) == [
        "meshgate/login/corp/client_secret",
        "meshgate/login/corp/hmac_secret",
        "meshgate/login/ops/client_secret",
        "meshgate/login/ops/hmac_secret",
    ]


def test_a_missing_secret_stops_the_compile_without_a_guess() -> None:
    """The compile job reads every secret first (and rejects the config at the secret's
    place when it cannot); a compile without the value never makes one up."""
    with pytest.raises(MissingSecretError, match="env:CLIENT_SECRET"):
        compile_snapshot(_config(login="corp"), secrets={"env:HMAC_SECRET": HMAC_SECRET})


def test_a_short_hmac_secret_is_refused_and_never_quoted() -> None:
    weak = "hunter2"
    with pytest.raises(InconsistentSnapshotError) as info:
        compile_snapshot(_config(login="corp"), secrets={**SECRETS, "env:HMAC_SECRET": weak})
    assert str(info.value) == (
        f"login 'corp': hmac_secret (env:HMAC_SECRET) is 7 bytes long; use at least "
        f"{MIN_HMAC_SECRET_BYTES} random bytes (for example the output of 'openssl rand "
        "-base64 32'), or the signed cookies can be forged"
    )
    assert weak not in str(info.value)


# --- the token endpoint's cluster -------------------------------------------------------------


def _cluster(login: dict[str, Any]) -> cluster_pb2.Cluster:
    snapshot = compile_snapshot(_config(logins=[login], login="corp"), secrets=SECRETS)
    cluster = snapshot.of_type(CLUSTER)["oauth2/corp"].unpack()
    assert isinstance(cluster, cluster_pb2.Cluster)
    return cluster


def test_https_token_endpoint_is_tls_with_sni_and_the_name_checked() -> None:
    cluster = _cluster(_login())
    assert cluster.type == cluster_pb2.Cluster.LOGICAL_DNS
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "oauth2.googleapis.com",
        443,
    )
    tls = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(tls)
    assert tls.sni == "oauth2.googleapis.com"
    validation = tls.common_tls_context.validation_context
    assert validation.trusted_ca.filename == SYSTEM_CA_BUNDLE
    [san] = validation.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (san.DNS, "oauth2.googleapis.com")


def test_a_private_ca_and_port() -> None:
    cluster = _cluster(
        _login(
            provider="oidc",
            authorization_endpoint="https://id.corp.example/auth",
            token_endpoint="https://id.corp.example:8443/token",
            ca_file="/etc/meshgate/corp-ca.pem",
        )
    )
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.port_value == 8443
    tls = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(tls)
    assert tls.common_tls_context.validation_context.trusted_ca.filename == (
        "/etc/meshgate/corp-ca.pem"
    )


def test_plain_http_on_this_machine_is_a_static_cluster_without_tls() -> None:
    cluster = _cluster(
        _login(
            provider="oidc",
            authorization_endpoint="http://127.0.0.1:9000/authorize",
            token_endpoint="http://127.0.0.1:9000/token",
        )
    )
    assert cluster.type == cluster_pb2.Cluster.STATIC
    assert not cluster.HasField("transport_socket")
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        9000,
    )


# --- the guide (docs/security.md, "Browser sign-in") ------------------------------------------


def _guide_section() -> str:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    start = text.index("## Browser sign-in (OAuth2 / OIDC)")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


GUIDE_EXAMPLES = examples(_guide_section())


def test_the_guide_has_google_github_and_oidc_examples() -> None:
    providers = {
        login["provider"]
        for _, text in GUIDE_EXAMPLES
        for login in yaml.safe_load(text).get("logins", [])
    }
    assert providers == {"google", "github", "oidc"}


@pytest.mark.parametrize(
    ("line", "text"), GUIDE_EXAMPLES, ids=[f"ex{n}" for n, _ in GUIDE_EXAMPLES]
)
def test_guide_example_compiles(line: int, text: str) -> None:
    try:
        config = parse_config(text, f"security.md example {line}").config
    except ConfigError as exc:
        pytest.fail(f"the example does not load:\n{exc}")
    snapshot = compile_snapshot(config, secrets=placeholder_secrets(config))
    assert [n for n in snapshot.of_type(CLUSTER) if n.startswith("oauth2/")]


def test_guide_error_samples_are_real() -> None:
    section = _guide_section()
    samples = [
        line.replace("gateway.yaml", "{file}", 1)
        for line in section.splitlines()
        if line.startswith("gateway.yaml")
    ]
    assert len(samples) >= 5
    real = {
        line
        for path in (TESTS / "fixtures" / "invalid").glob("login_*.expected")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert [s for s in samples if s not in real] == []
    # The weak-secret sample is the compiler's own message (test above).
    assert (
        f"login 'corp': hmac_secret (env:HMAC_SECRET) is 7 bytes long; use at least "
        f"{MIN_HMAC_SECRET_BYTES} random bytes (for example the output of 'openssl rand "
        "-base64 32'), or the signed cookies can be forged"
    ) in section


@pytest.mark.integration
@pytest.mark.parametrize(
    ("line", "text"), GUIDE_EXAMPLES, ids=[f"ex{n}" for n, _ in GUIDE_EXAMPLES]
)
def test_guide_example_is_accepted_by_envoy(line: int, text: str) -> None:
    config = parse_config(text, f"security.md example {line}").config
    snapshot = compile_snapshot(config, secrets=placeholder_secrets(config))
    objections = asyncio.run(ValidateModeValidator().validate(snapshot))
    assert objections == [], f"Envoy refuses the example at security.md:{line}"
