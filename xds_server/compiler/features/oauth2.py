"""Browser sign-in (OAuth2 / OpenID Connect): Envoy's ``oauth2`` filter, one per login.

A route with a ``login`` (its own, or its virtual host's unless it is ``public``) sends a
browser without a valid session to the identity provider, exchanges the code the browser
brings back for tokens (with PKCE), keeps them in cookies that Envoy encrypts and signs with
the login's HMAC secret, renews them with the refresh token when the access token expires, and
forwards the access token upstream as ``Authorization: Bearer``. Everything runs in Envoy; the
control plane only compiles it.

Why one filter per login: the filter takes no per-route settings, so each login is its own
filter (``envoy.filters.http.oauth2.<login>``), in the chain *disabled*, and a route switches
on the one of its login. The provider redirects the browser to the login's ``redirect_path``
and sign-out is its ``signout_path``; a request reaches a filter only on a route that enables
it, so each virtual host that uses a login gets two routes of its own, first, for those two
paths (they never reach an upstream: the filter answers them).

Secrets (the client secret and the HMAC secret) never appear in a filter config: the filter
names SDS secrets, which the control plane serves from the values the compile job read
(``ctx.secrets``, by :meth:`~meshgate.config.identity.SecretRef.key`). The token endpoint gets
a cluster of its own per login: TLS with SNI and the certificate's name checked against the
host, trusting the system CA bundle (or the login's ``ca_file``); plain only for an http URL,
which the model allows on this machine only.

Cookies: Envoy always marks them ``Secure`` and ``HttpOnly`` (browsers accept ``Secure`` cookies
from ``http://localhost``); meshgate adds ``SameSite=Lax``, which keeps them off cross-site
subrequests and still lets the provider's redirect back to the callback carry the nonce
cookie (``Strict`` would break exactly that top-level navigation). Cookie names carry the login
name (``IdToken-corp``, see ``identity_names.login_cookies``) so two logins never collide.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, http_uri_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.oauth2.v3 import oauth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import wrappers_pb2

from meshgate.config import GatewayConfig, Listener, Route, VirtualHost
from meshgate.config.identity import Login
from meshgate.config.login_refs import enforced_login
from xds_server.compiler.context import CompileContext, ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import disable, enable, http_filter
from xds_server.compiler.identity_names import (
    ALLOW_RBAC_FILTER,
    DENY_RBAC_FILTER,
    JWT_FILTER,
    OAUTH2_FILTER,
    TOKEN_RBAC_FILTER,
    login_cookies,
    oauth2_filter,
)
from xds_server.compiler.protos import duration, pack
from xds_server.compiler.secrets import (
    generic_secret_resource,
    sds_secret_config,
    secret_name,
    secret_value,
)
from xds_server.snapshot.snapshot import InconsistentSnapshotError, Resource

#: One call of the token endpoint (code exchange or refresh) may take this long.
TOKEN_TIMEOUT = timedelta(seconds=5)
#: The access token's lifetime when the provider names none (GitHub's OAuth apps): then the
#: browser is sent through the provider again, silently once the user has authorized the app.
DEFAULT_EXPIRES_IN = timedelta(hours=1)
#: Debian's and Ubuntu's (and Alpine's) system CA bundle, which Envoy's image also has.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: A shorter HMAC secret could be guessed offline from one signed cookie.
MIN_HMAC_SECRET_BYTES = 32
#: Filters a sign-in callback or sign-out must not be held up by (the oauth2 filter answers
#: those requests itself; they never reach an upstream, and a browser coming back from the
#: provider has no token yet). The policy features switch these on per route today, so the
#: login's own routes would not run them anyway; switching them off explicitly keeps it so if
#: one is ever switched on for a whole virtual host.
_NOT_ON_LOGIN_PATHS = (JWT_FILTER, TOKEN_RBAC_FILTER, DENY_RBAC_FILTER, ALLOW_RBAC_FILTER)
_SAME_SITE = oauth_pb2.CookieConfig(same_site=oauth_pb2.CookieConfig.LAX)


def token_cluster_name(login: str) -> str:
    """The token endpoint's cluster; ``/`` keeps it apart from every service name."""
    return f"oauth2/{login}"


def client_secret_name(login: str) -> str:
    """The SDS name of a login's client secret: ``meshgate/login/<login>/client_secret``."""
    return secret_name(f"login/{login}", "client_secret")


def hmac_secret_name(login: str) -> str:
    return secret_name(f"login/{login}", "hmac_secret")


# --- who uses which login ---------------------------------------------------------------------


def vhost_logins(vhost: VirtualHost) -> list[str]:
    """The logins some route of ``vhost`` enforces, in first-use order."""
    seen: dict[str, None] = {}
    for route in vhost.routes:
        name = enforced_login(vhost, route)
        if name is not None:
            seen.setdefault(name, None)
    return list(seen)


def listener_logins(config: GatewayConfig, listener: Listener) -> list[Login]:
    """The logins some route of ``listener`` enforces, in the order ``logins`` defines them."""
    used = {name for vhost in listener.virtual_hosts for name in vhost_logins(vhost)}
    return [login for login in config.logins if login.name in used]


def used_logins(config: GatewayConfig) -> list[Login]:
    """Every login some route enforces (an unused one costs nothing and needs no secrets)."""
    used = {n for lst in config.listeners for vh in lst.virtual_hosts for n in vhost_logins(vh)}
    return [login for login in config.logins if login.name in used]


# --- the filter -------------------------------------------------------------------------------


def _exact(path: str) -> path_pb2.PathMatcher:
    return path_pb2.PathMatcher(path=string_pb2.StringMatcher(exact=path))


def oauth2_config(login: Login) -> oauth_pb2.OAuth2:
    """The filter of one login."""
    cookies = oauth_pb2.OAuth2Credentials.CookieNames(**login_cookies(login.name))
    config = oauth_pb2.OAuth2Config(
        token_endpoint=http_uri_pb2.HttpUri(
            uri=login.effective_token_endpoint(),
            cluster=token_cluster_name(login.name),
            timeout=duration(TOKEN_TIMEOUT),
        ),
        authorization_endpoint=login.effective_authorization_endpoint(),
        end_session_endpoint=login.effective_end_session_endpoint() or "",
        credentials=oauth_pb2.OAuth2Credentials(
            client_id=login.client_id,
            token_secret=sds_secret_config(client_secret_name(login.name)),
            hmac_secret=sds_secret_config(hmac_secret_name(login.name)),
            cookie_names=cookies,
        ),
        # The scheme the client used (Envoy sets x-forwarded-proto) and the host it asked
        # for: the provider checks the result against the redirect URIs registered for it.
        redirect_uri=f"%REQ(x-forwarded-proto)%://%REQ(:authority)%{login.redirect_path}",
        redirect_path_matcher=_exact(login.redirect_path),
        signout_path=_exact(login.signout_path),
        forward_bearer_token=login.forward_token,
        auth_scopes=login.effective_scopes(),
        use_refresh_token=wrappers_pb2.BoolValue(value=login.use_refresh_token),
        default_expires_in=duration(DEFAULT_EXPIRES_IN),
        cookie_configs=oauth_pb2.CookieConfigs(
            bearer_token_cookie_config=_SAME_SITE,
            oauth_hmac_cookie_config=_SAME_SITE,
            oauth_expires_cookie_config=_SAME_SITE,
            id_token_cookie_config=_SAME_SITE,
            refresh_token_cookie_config=_SAME_SITE,
            oauth_nonce_cookie_config=_SAME_SITE,
            code_verifier_cookie_config=_SAME_SITE,
        ),
        stat_prefix=f"{login.name}.",
    )
    return oauth_pb2.OAuth2(config=config)


def login_routes(login: Login, policy_filters: bool) -> list[rc_pb2.Route]:
    """The sign-in callback and the sign-out path of ``login`` on one virtual host: the
    filter answers both (a 404 is what a request would get if it ever did not)."""
    routes = []
    for kind, path in (("callback", login.redirect_path), ("signout", login.signout_path)):
        route = rc_pb2.Route(
            name=f"oauth2-{login.name}-{kind}",
            match=rc_pb2.RouteMatch(path=path),
            direct_response=rc_pb2.DirectResponseAction(status=404),
        )
        route.typed_per_filter_config[oauth2_filter(login.name)].CopyFrom(enable())
        if policy_filters:
            for name in _NOT_ON_LOGIN_PATHS:
                route.typed_per_filter_config[name].CopyFrom(disable())
        routes.append(route)
    return routes


def _has_policy(vhost: VirtualHost) -> bool:
    return vhost.policy is not None or any(r.policy is not None for r in vhost.routes)


# --- the token endpoint's cluster and the secrets ---------------------------------------------


def token_cluster(login: Login) -> cluster_pb2.Cluster:
    """How Envoy reaches the login's token endpoint."""
    url = urlsplit(login.effective_token_endpoint())
    host = url.hostname or ""
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    name = token_cluster_name(login.name)
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host, port_value=port)
            )
        )
    )
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC if _is_ip(host) else cluster_pb2.Cluster.LOGICAL_DNS,
        connect_timeout=duration(TOKEN_TIMEOUT),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
    if not _is_ip(host):
        # An identity provider with IPv6 addresses is not reachable over IPv6 everywhere.
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    if tls:
        context = tls_pb2.UpstreamTlsContext(
            sni=host,
            common_tls_context=tls_pb2.CommonTlsContext(
                validation_context=common_pb2.CertificateValidationContext(
                    trusted_ca=base_pb2.DataSource(filename=login.ca_file or SYSTEM_CA_BUNDLE),
                    match_typed_subject_alt_names=[
                        common_pb2.SubjectAltNameMatcher(
                            san_type=common_pb2.SubjectAltNameMatcher.DNS,
                            matcher=string_pb2.StringMatcher(exact=host),
                        )
                    ],
                )
            ),
        )
        cluster.transport_socket.name = "envoy.transport_sockets.tls"
        cluster.transport_socket.typed_config.CopyFrom(pack(context))
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def hmac_secret_value(ctx: CompileContext, login: Login) -> str:
    """The HMAC secret the compile job read; a weak one stops the compile (the last good
    config keeps serving) rather than let cookies be forged."""
    value = secret_value(ctx, login.hmac_secret)
    size = len(value.encode())
    if size < MIN_HMAC_SECRET_BYTES:
        raise InconsistentSnapshotError(
            f"login {login.name!r}: hmac_secret ({login.hmac_secret.key()}) is {size} bytes "
            f"long; use at least {MIN_HMAC_SECRET_BYTES} random bytes (for example the output "
            "of 'openssl rand -base64 32'), or the signed cookies can be forged"
        )
    return value


class OAuth2(Feature):
    name = "oauth2"
    http_filter_names = (OAUTH2_FILTER,)

    # A config without logins (most) costs one attribute check per hook, not a walk of its
    # routes.

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        if not ctx.config.logins:
            return []
        return [
            http_filter(oauth2_filter(login.name), oauth2_config(login), disabled=True)
            for login in listener_logins(ctx.config, ctx.listener)
        ]

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        login = enforced_login(ctx.vhost, route)
        if login is not None:
            out.typed_per_filter_config[oauth2_filter(login)].CopyFrom(enable())

    def patch_vhost(self, ctx: VirtualHostContext, out: rc_pb2.VirtualHost) -> None:
        if not ctx.config.logins:
            return
        names = vhost_logins(ctx.vhost)
        if not names:
            return
        policy_filters = _has_policy(ctx.vhost)
        first: list[rc_pb2.Route] = []
        for name in names:
            login = ctx.config.login(name)
            if login is not None:  # reference_errors() rules out an unknown name
                first += login_routes(login, policy_filters)
        routes = [*first, *out.routes]
        del out.routes[:]
        out.routes.extend(routes)

    def extra_resources(self, ctx: CompileContext) -> list[Resource]:
        out: list[Resource] = []
        if not ctx.config.logins:
            return out
        for login in used_logins(ctx.config):
            out.append(Resource.of(token_cluster_name(login.name), token_cluster(login)))
            client = secret_value(ctx, login.client_secret)
            out.append(generic_secret_resource(client_secret_name(login.name), client))
            hmac = hmac_secret_value(ctx, login)
            out.append(generic_secret_resource(hmac_secret_name(login.name), hmac))
        return out
