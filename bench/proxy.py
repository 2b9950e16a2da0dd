"""Throughput and latency of routes through a real fleet Envoy, relative to a plain proxy.

Brings up, all on loopback:

* the control plane (``python -m xds_server``, canary validator) watching a generated config;
* one fleet Envoy fed over ADS (access logs to /dev/null), ``--concurrency 1`` by default;
* a fast upstream: a second, static Envoy (``--concurrency 1``) answering every request with a
  fixed ~100-byte 200, so the upstream is never the bottleneck.

Then runs ``wrk -t1 -c<N> -d<S>s --latency`` against each scenario's path, alternating
scenarios round by round (plain, direct, plain, direct, ...) so that drift of the machine hits
all of them alike, and reports the median of the rounds (best requests/s alongside).

Every scenario is a named config fragment (routes + services) with the path wrk requests;
``plain`` (a proxied route to the fast upstream) is the reference every ratio is relative to.
A later feature adds its scenario to :data:`SCENARIOS`, e.g. ``jwt`` with a jwt_authn route,
and is measured against ``plain`` in the same run.

    python bench/proxy.py                       # 3 rounds x 10 s per scenario, 50 connections
    python bench/proxy.py --duration 5 --rounds 2 --scenarios plain,direct --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_tokens import AUDIENCE as BENCH_AUDIENCE
from bench_tokens import ISSUER as BENCH_ISSUER
from bench_tokens import BenchIdp
from benchlib import (
    BenchError,
    ControlPlane,
    FleetEnvoy,
    StaticUpstream,
    cleanup,
    format_table,
    http_get,
    require_wrk,
    wait_until,
    write_config,
)

from meshgate.proxy.envoy_process import free_port
from tests.support.browser import Browser
from tests.support.oidc_provider import OidcProvider

REFERENCE = "plain"
UPSTREAM_SERVICE = "fast-upstream"
BENCH_LOGIN = "bench"
#: The bench login's secrets, passed to the control plane in its environment.
_LOGIN_SECRETS = {
    "MESHGATE_BENCH_CLIENT_SECRET": "bench-client-secret-0f1e2d3c4b5a",
    "MESHGATE_BENCH_HMAC_SECRET": "bench-hmac-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}


@dataclass(frozen=True)
class Scenario:
    """One thing to measure: config it needs and the request path wrk sends."""

    name: str
    path: str
    description: str
    #: Route entries (config.py ``Route`` as dicts) added to the listener's only virtual host.
    routes: Callable[[], list[dict[str, Any]]]
    #: Extra services (``Service`` as dicts) beyond the fast upstream service; the argument is
    #: the fast upstream's port, so a scenario can point its own service at it.
    services: Callable[[int], list[dict[str, Any]]] = field(default=lambda _port: [])
    #: Request headers wrk sends, so that per-request policies really run (CORS, encodings,
    #: a bearer token).
    headers: dict[str, str] = field(default_factory=dict)
    #: Top-level config sections the routes need (issuers, roles, policies).
    config: Callable[[], dict[str, Any]] = field(default=lambda: {})
    #: The route needs a signed-in browser: the bench starts a local identity provider, adds
    #: the ``bench`` login, signs in once and sends the session cookies with every request.
    signed_in: bool = False


#: The identity provider of the ``jwt_roles`` scenario (an RSA key made once per run).
IDP = BenchIdp.create()


def _jwt_roles_config() -> dict[str, Any]:
    return {
        "issuers": [
            {
                "name": "bench-idp",
                "issuer": BENCH_ISSUER,
                "audiences": BENCH_AUDIENCE,
                "jwks": {"inline": IDP.jwks()},
            }
        ],
        "roles": [
            {"name": "reader", "permissions": [{"paths": ["/jwt-roles/**"], "methods": ["GET"]}]}
        ],
        "policies": [{"name": "bench-roles", "issuers": ["bench-idp"], "roles": ["reader"]}],
    }


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="plain",
            path="/plain",
            description="proxied to the static upstream Envoy (reference)",
            routes=lambda: [
                {"name": "plain", "match": {"prefix": "/plain"}, "service": UPSTREAM_SERVICE}
            ],
        ),
        Scenario(
            name="direct",
            path="/direct",
            description="direct_response from the fleet Envoy itself (no upstream)",
            routes=lambda: [
                {
                    "name": "direct",
                    "match": {"path": "/direct"},
                    "direct_response": {"status": 200, "body": StaticUpstream.BODY},
                }
            ],
        ),
        Scenario(
            name="hardened",
            path="/hardened",
            description="retries, outlier detection, security headers, CORS, compression (issue 3)",
            routes=lambda: [
                {
                    "name": "hardened",
                    "match": {"prefix": "/hardened"},
                    "service": "hardened-upstream",
                    "retries": {"retry_on": ["5xx", "reset", "connect-failure"], "num_retries": 2},
                    "security_headers": {
                        "hsts": {"max_age": "8760h"},
                        "content_security_policy": "default-src 'self'",
                    },
                    "cors": {
                        "allow_origins": ["https://app.example.com"],
                        "allow_methods": ["GET", "POST"],
                    },
                    "compression": True,
                }
            ],
            headers={"Origin": "https://app.example.com", "Accept-Encoding": "gzip, br"},
            services=lambda port: [
                {
                    "name": "hardened-upstream",
                    "endpoints": [{"address": "127.0.0.1", "port": port}],
                    "outlier_detection": {"consecutive_5xx": 5},
                }
            ],
        ),
        Scenario(
            name="ip-rules",
            path="/ip-rules",
            description="plain plus an IP allow list (and a deny) the client passes (issue 8)",
            routes=lambda: [
                {
                    "name": "ip-rules",
                    "match": {"prefix": "/ip-rules"},
                    "service": UPSTREAM_SERVICE,
                    "ip_rules": {
                        "allow": ["10.0.0.0/8", "192.168.0.0/16", "127.0.0.0/8", "2001:db8::/32"],
                        "deny": ["127.0.0.2", "203.0.113.0/24"],
                    },
                }
            ],
        ),
        Scenario(
            name="jwt_roles",
            path="/jwt-roles",
            description="RS256 token (jwt_authn, token checks, identity headers) + a role policy",
            routes=lambda: [
                {
                    "name": "jwt-roles",
                    "match": {"prefix": "/jwt-roles"},
                    "service": UPSTREAM_SERVICE,
                    "policy": "bench-roles",
                }
            ],
            headers={"Authorization": f"Bearer {IDP.token(roles=['reader'], tenant='t1')}"},
            config=_jwt_roles_config,
        ),
        Scenario(
            name="only-login",
            path="/only-login",
            description="plain plus browser sign-in: a session's cookies checked (HMAC) and "
            "decrypted, the access token forwarded (issue 8)",
            routes=lambda: [
                {
                    "name": "only-login",
                    "match": {"prefix": "/only-login"},
                    "service": UPSTREAM_SERVICE,
                    "login": BENCH_LOGIN,
                }
            ],
            signed_in=True,
        ),
        *[
            Scenario(
                name=f"only-{name}",
                path=f"/only-{name}",
                description=f"plain plus {name} alone (cost breakdown of 'hardened')",
                routes=lambda name=name, extra=extra: [  # type: ignore[misc]
                    {
                        "name": f"only-{name}",
                        "match": {"prefix": f"/only-{name}"},
                        "service": UPSTREAM_SERVICE,
                        **extra,
                    }
                ],
                headers={"Origin": "https://app.example.com", "Accept-Encoding": "gzip, br"},
            )
            for name, extra in [
                ("retries", {"retries": {"num_retries": 2}}),
                ("security-headers", {"security_headers": {"hsts": {"max_age": "8760h"}}}),
                ("cors", {"cors": {"allow_origins": ["https://app.example.com"]}}),
                ("compression", {"compression": True}),
                (
                    "route-headers",
                    {
                        "response_headers": {
                            "set": {"strict-transport-security": "max-age=31536000"}
                        }
                    },
                ),
            ]
        ],
    ]
}


def login_config(idp: OidcProvider) -> dict[str, Any]:
    """The ``bench`` login, against the local provider (tokens valid for an hour)."""
    return {
        "name": BENCH_LOGIN,
        "provider": "oidc",
        "client_id": idp.client_id,
        "client_secret": {"env": "MESHGATE_BENCH_CLIENT_SECRET"},
        "hmac_secret": {"env": "MESHGATE_BENCH_HMAC_SECRET"},
        "authorization_endpoint": idp.authorization_endpoint,
        "token_endpoint": idp.token_endpoint,
    }


def session_cookies(base: str, path: str) -> str:
    """Sign in once, as a browser, and return the session's ``Cookie`` header."""
    browser = Browser()
    page = browser.navigate(base + path)
    if page.status_code != 200:
        raise BenchError(f"signing in through {path} ended with HTTP {page.status_code}")
    return "; ".join(f"{k}={v}" for k, v in browser.cookies(base).items())


def build_config(
    listener_port: int,
    upstream_port: int,
    scenarios: list[Scenario],
    idp: OidcProvider | None = None,
) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = [
        {"name": UPSTREAM_SERVICE, "endpoints": [{"address": "127.0.0.1", "port": upstream_port}]}
    ]
    top: dict[str, Any] = {}
    for s in scenarios:
        routes += s.routes()
        services += s.services(upstream_port)
        for key, items in s.config().items():
            top.setdefault(key, []).extend(items)
    return {
        **top,
        "listeners": [
            {
                "name": "bench",
                "address": "127.0.0.1",
                "port": listener_port,
                "virtual_hosts": [{"name": "bench", "domains": ["*"], "routes": routes}],
            }
        ],
        "services": services,
        "logins": [login_config(idp)] if idp is not None else [],
    }


# -- wrk ----------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def parse_wrk(output: str) -> WrkRun:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"cannot parse wrk output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        requests_per_s=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def run_wrk(
    wrk: str, url: str, connections: int, duration: float, headers: dict[str, str] | None = None
) -> WrkRun:
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# -- the run ------------------------------------------------------------------------------------


def _status(url: str, headers: dict[str, str]) -> int:
    """The status of a GET with ``headers`` (HTTP errors are answers too)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ScenarioResult:
    name: str
    path: str
    description: str
    runs: list[WrkRun] = field(default_factory=list)
    #: Fleet Envoy CPU microseconds per request, per run: the work the route costs Envoy,
    #: steadier than req/s when wrk and two Envoys share two cores.
    cpu_us: list[float] = field(default_factory=list)

    @property
    def cpu_us_per_request(self) -> float:
        return statistics.median(self.cpu_us) if self.cpu_us else 0.0

    @property
    def rps(self) -> float:
        return statistics.median(r.requests_per_s for r in self.runs)

    @property
    def best_rps(self) -> float:
        return max(r.requests_per_s for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.non_2xx + r.socket_errors for r in self.runs)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, scenarios: list[Scenario]) -> dict[str, Any]:
    wrk = require_wrk()
    with cleanup() as stops, tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        upstream = StaticUpstream(concurrency=1)
        stops.append(upstream.stop)
        listener_port = free_port()
        idp: OidcProvider | None = None
        if any(s.signed_in for s in scenarios):
            idp = OidcProvider(
                "bench", _LOGIN_SECRETS["MESHGATE_BENCH_CLIENT_SECRET"], access_ttl=3600
            )
            idp.start()
            stops.append(idp.stop)
            os.environ.update(_LOGIN_SECRETS)  # the control plane reads the secrets there
        config_path = Path(tmp) / "gateway.yaml"
        write_config(config_path, build_config(listener_port, upstream.port, scenarios, idp))
        plane = ControlPlane(config_path)
        stops.append(plane.stop)
        envoy = FleetEnvoy(plane.xds_port, concurrency=args.concurrency or None)
        stops.append(envoy.stop)
        base = f"http://127.0.0.1:{listener_port}"

        def answers(s: Scenario) -> Callable[[], bool]:
            return lambda: _status(base + s.path, s.headers) == 200

        headers = {s.name: dict(s.headers) for s in scenarios}
        for s in scenarios:
            if s.signed_in:
                wait_until(
                    lambda p=s.path: Browser().get(base + p).status_code == 302,  # type: ignore[misc]
                    30,
                    f"{s.name}: GET {s.path} -> 302 (to sign in) through the fleet Envoy",
                )
                headers[s.name]["Cookie"] = session_cookies(base, s.path)
                continue
            wait_until(answers(s), 30, f"{s.name}: GET {s.path} -> 200 through the fleet Envoy")
        status, body = http_get(base + SCENARIOS[REFERENCE].path)
        if body.decode() != StaticUpstream.BODY:
            raise BenchError(f"/plain did not reach the static upstream: {status} {body[:200]!r}")

        concurrency = args.concurrency or "default (one worker per core)"
        log(
            f"fleet Envoy --concurrency {concurrency}; upstream Envoy --concurrency 1; "
            f"wrk -t1 -c{args.connections} -d{args.duration:g}s; {args.rounds} round(s)"
        )
        results = {s.name: ScenarioResult(s.name, s.path, s.description) for s in scenarios}
        for s in scenarios:  # warm-up: connections, stats, caches; not recorded
            run_wrk(wrk, base + s.path, args.connections, min(2.0, args.duration), headers[s.name])
        for rnd in range(1, args.rounds + 1):
            order = scenarios if rnd % 2 else list(reversed(scenarios))
            for s in order:
                cpu_before = cpu_seconds(envoy.pid)
                run = run_wrk(wrk, base + s.path, args.connections, args.duration, headers[s.name])
                cpu = cpu_seconds(envoy.pid) - cpu_before
                results[s.name].runs.append(run)
                results[s.name].cpu_us.append(cpu * 1e6 / max(run.requests, 1))
                log(
                    f"  round {rnd} {s.name:<10} {run.requests_per_s:>10.0f} req/s  "
                    f"p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms"
                )
        ref = results[REFERENCE].rps
        ref_cpu = results[REFERENCE].cpu_us_per_request
        return {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "settings": {
                "duration_s": args.duration,
                "connections": args.connections,
                "rounds": args.rounds,
                "wrk_threads": 1,
                "fleet_envoy_concurrency": args.concurrency or None,
                "upstream_envoy_concurrency": 1,
                "aggregate": "median of rounds",
                "reference": REFERENCE,
            },
            "results": [
                {
                    "name": r.name,
                    "path": r.path,
                    "description": r.description,
                    "requests_per_s": round(r.rps, 1),
                    "best_requests_per_s": round(r.best_rps, 1),
                    "p50_ms": round(r.p50, 3),
                    "p99_ms": round(r.p99, 3),
                    "ratio_to_plain": round(r.rps / ref, 3) if ref else None,
                    "fleet_cpu_us_per_request": round(r.cpu_us_per_request, 2),
                    "cpu_ratio_to_plain": round(r.cpu_us_per_request / ref_cpu, 3)
                    if ref_cpu
                    else None,
                    "errors": r.errors,
                    "runs": [asdict(run) for run in r.runs],
                }
                for r in results.values()
            ],
        }


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(f"meshgate proxy benchmark, {report['date']}, {report['machine']['cpus']} CPUs")
    print(
        f"fleet Envoy concurrency: {s['fleet_envoy_concurrency'] or 'default'}, "
        f"upstream Envoy concurrency: 1, wrk -t1 -c{s['connections']} "
        f"-d{s['duration_s']:g}s, {s['rounds']} rounds, median"
    )
    rows = [
        [
            r["name"],
            r["path"],
            f"{r['requests_per_s']:.0f}",
            f"{r['best_requests_per_s']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['ratio_to_plain']:.2f}x",
            f"{r['fleet_cpu_us_per_request']:.1f}",
            f"{r['cpu_ratio_to_plain']:.2f}x",
            str(r["errors"]),
        ]
        for r in report["results"]
    ]
    print(
        format_table(
            [
                "scenario",
                "path",
                "req/s",
                "best req/s",
                "p50 ms",
                "p99 ms",
                "vs plain",
                "Envoy us/req",
                "cpu vs plain",
                "errors",
            ],
            rows,
        )
    )
    by_name = {r["name"]: r for r in report["results"]}
    if "direct" in by_name and REFERENCE in by_name:
        plain, direct = by_name[REFERENCE], by_name["direct"]
        print(f"ratio plain/direct: {plain['requests_per_s'] / direct['requests_per_s']:.2f}")
    if any(r["errors"] for r in report["results"]):
        print("warning: some requests failed (non-2xx or socket errors); see --json for details")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--rounds", type=int, default=3, help="measured runs per scenario (3)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="fleet Envoy worker threads; 0 = Envoy's default, one per core (1)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)} ('{REFERENCE}' is always included)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"error: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    try:
        report = measure(args, [SCENARIOS[n] for n in dict.fromkeys(names)])
    except BenchError as exc:
        print(str(exc) if str(exc).startswith("error:") else f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
