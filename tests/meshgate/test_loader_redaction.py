"""Secrets never echoed: a credential in a config value appears in no output of any kind.

Each test searches *everything* a run produced (``meshgate validate`` output, the control
plane's JSON log lines, ``/status``, ``/metrics``) for the secret string, so a new place
that echoes values fails here even if its wording is not known in advance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from meshgate.loader import ConfigError, parse_config
from meshgate.problems import Problem
from meshgate.proxy.envoy_process import free_port
from meshgate.redact import (
    EXCERPT_CHARS,
    is_sensitive_name,
    looks_like_credential,
    redact_text,
    show,
)
from tests.paths import ROOT
from tests.support.control_plane import ControlPlaneProcess, http_get, wait_until
from xds_server.metrics import XdsMetrics
from xds_server.publish.publisher import Publisher
from xds_server.server.status import StatusRegistry
from xds_server.snapshot.cache import SnapshotCache

SECRET = "SUPERSECRET-TOKEN-123"

HEAD = "listeners:\n  - name: public\n    port: 8080\n    virtual_hosts:\n      - name: default\n"
ROUTE = "        routes:\n          - {match: {prefix: /}, service: web}\n"
SERVICES = "services:\n  - name: web\n"

#: Every place a config value can be written that may carry a credential, each invalid so
#: that an error message is made about it.
LEAKY_CONFIGS = {
    "issue example": HEAD
    + f'        request_headers:\n          set: {{Authorization: "Bearer {SECRET}\\x01"}}\n'
    + ROUTE
    + SERVICES,
    "token-shaped value in an ordinary header": HEAD
    + f'        response_headers:\n          add: {{x-note: "Bearer {SECRET}%"}}\n'
    + ROUTE
    + SERVICES,
    "api key header with a bad %": HEAD
    + f'        request_headers:\n          set: {{X-Api-Key: "{SECRET}%"}}\n'
    + ROUTE
    + SERVICES,
    "cookie header match of the wrong type": HEAD
    + "        routes:\n"
    + "          - match:\n              prefix: /\n"
    + f"              headers: [{{name: Cookie, exact: [{SECRET}]}}, {{name: cookie, prefix: 5}}]\n"
    + "            service: web\n"
    + SERVICES,
    "authorization header match with a bad regex": HEAD
    + "        routes:\n"
    + "          - match:\n              prefix: /\n"
    + f'              headers: [{{name: authorization, regex: "Basic {SECRET}("}}]\n'
    + "            service: web\n"
    + SERVICES,
    "secret-named unknown field": HEAD + ROUTE + SERVICES + f"client_secret: {SECRET}\n",
    "a credential written as a key": HEAD + ROUTE + SERVICES + f'"Bearer {SECRET}": 1\n',
    "a credential as a duplicated key": HEAD
    + ROUTE
    + SERVICES
    + f'"Bearer {SECRET}": 1\n"Bearer {SECRET}": 2\n',
    "token as the server header value, with a control character": HEAD.replace(
        "    virtual_hosts:\n",
        f'    server_header: {{mode: replace, value: "token={SECRET}\\n"}}\n    virtual_hosts:\n',
    )
    + ROUTE
    + SERVICES,
    "JWT in a header value": HEAD
    + "        request_headers:\n"
    + '          set: {x-jwt: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.SUPERSECRET-TOKEN-123\\x7f"}\n'
    + ROUTE
    + SERVICES,
}


@pytest.mark.parametrize("kind", sorted(LEAKY_CONFIGS))
def test_validate_never_prints_the_secret(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(LEAKY_CONFIGS[kind], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1, kind
    assert result.stderr.startswith(f"error: {path}:"), result.stderr  # a located problem
    assert "SUPERSECRET" not in result.stdout + result.stderr


def test_the_issue_example_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(LEAKY_CONFIGS["issue example"], "g.yaml")
    assert str(info.value) == (
        "g.yaml:7:17: listeners[0].virtual_hosts[0].request_headers.set.Authorization: header "
        "value <redacted, 29 chars> contains the control character '\\x01' at position 28; "
        "Envoy refuses it in a header"
    )


def test_control_plane_log_status_and_metrics_never_show_the_secret(tmp_path: Path) -> None:
    """The running control plane (a real process, no Envoy needed: --validator none) gets
    each leaky config in turn; its JSON log, /status and /metrics are searched."""
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD + ROUTE + SERVICES, encoding="utf-8")
    log = tempfile.NamedTemporaryFile(prefix="xds-", suffix=".log", dir=tmp_path, delete=False)
    cp = ControlPlaneProcess(
        path,
        free_port(),
        free_port(),
        validator="none",
        extra_args=("--poll-interval", "0.05"),
        stdout=log,
        stderr=log,
    )
    cp.start()
    try:
        wait_until(cp.ready, 30, "first config published")
        seen: list[str] = []
        for kind, text in LEAKY_CONFIGS.items():
            path.write_text(text, encoding="utf-8")

            def rejected(kind: str = kind) -> str:
                status = cp.status()
                errors = status["config"]["errors"]
                digest = status["config"]["rejected_digest"]
                return json.dumps(status) if errors and digest not in seen else ""

            status_json = wait_until(rejected, 10, f"rejection of {kind}")
            seen.append(json.loads(status_json)["config"]["rejected_digest"])
            assert SECRET not in status_json, kind
        _, metrics = http_get(f"{cp.admin_url}/metrics")
        assert SECRET.encode() not in metrics
    finally:
        cp.stop()
    logs = Path(log.name).read_text(encoding="utf-8")
    records = [json.loads(line) for line in logs.splitlines()]
    rejections = [
        r for r in records if r["logger"] == "meshgate.publisher" and r["level"] == "error"
    ]
    assert len(rejections) >= len(LEAKY_CONFIGS)  # every config was rejected and logged
    assert "SUPERSECRET" not in logs


def test_envoy_nack_text_is_redacted_in_status() -> None:
    registry = StatusRegistry()
    stream = registry.opened("envoy-1", "c", "sotw", "peer")
    nack = (
        'Proto constraint validation failed: header { key: "authorization" value: "Basic '
        f'{SECRET}" }} and "x-api-key": "{SECRET}" and cookie=session{SECRET} '
        f"\x1b[31m and Bearer {SECRET}"
    )
    registry.nacked(
        stream, "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "v1", nack
    )
    text = json.dumps(registry.as_dict())
    assert "SUPERSECRET" not in text
    assert "\\u001b" not in text  # the escape character is shown escaped, not sent raw
    assert "Proto constraint validation failed" in text


def test_publisher_reject_redacts_and_bounds_what_status_shows() -> None:
    publisher = Publisher(SnapshotCache(), None, XdsMetrics(), source="g.yaml")
    problems = [
        Problem("g.yaml", "", f"Envoy rejected the config: regex 'Bearer {SECRET}' ...", origin="x")
    ] * 150
    publisher.reject(problems, "abc")
    errors = publisher.state.errors
    assert len(errors) == 101
    assert errors[-1]["message"] == "... and 50 more problems"
    assert "SUPERSECRET" not in json.dumps(errors)
    assert errors[0]["message"] == "Envoy rejected the config: regex 'Bearer <redacted>' ..."


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("short", "'short'"),
        ("x" * 40, f"'{'x' * EXCERPT_CHARS}…' (40 chars)"),
        ("a\r\nb\x01\x7f\u202e", "'a\\r\\nb\\x01\\x7f\\u202e'"),
        ("it's", '"it\'s"'),
        (f"Bearer {SECRET}", "<redacted, 28 chars>"),
        (f"basic {SECRET}", "<redacted, 27 chars>"),
        (f"password={SECRET}", "<redacted, 30 chars>"),
        ("eyJhbGciOi.eyJzdWIiOi.sig", "<redacted, 25 chars>"),
        (True, "true"),
        (8080, "8080"),
        (None, "null"),
        ([1, 2], "a list"),
    ],
)
def test_show(value: object, shown: str) -> None:
    assert show(value) == shown


def test_show_sensitive_hides_everything() -> None:
    assert show("anything", sensitive=True) == "<redacted, 8 chars>"
    assert show(12345, sensitive=True) == "<redacted, 5 chars>"


@pytest.mark.parametrize(
    ("name", "header", "sensitive"),
    [
        ("Authorization", True, True),
        ("Proxy-Authorization", True, True),
        ("Cookie", True, True),
        ("set-cookie", True, True),
        ("X-Api-Key", True, True),
        ("x-auth-token", True, True),
        ("client_secret", False, True),
        ("db_password", False, True),
        ("credentials", False, True),
        ("cookie", False, False),  # the config field describing a cookie holds no cookie
        ("x-user", True, False),
        (":authority", True, False),
        ("content_security_policy", False, False),
    ],
)
def test_sensitive_names(name: str, header: bool, sensitive: bool) -> None:
    assert is_sensitive_name(name, header=header) is sensitive


def test_credential_shapes() -> None:
    assert looks_like_credential(f"Bearer {SECRET}")
    assert looks_like_credential(f"  NEGOTIATE {SECRET}")
    assert looks_like_credential("-----BEGIN RSA PRIVATE KEY-----")
    assert not looks_like_credential("text/plain; charset=utf-8")
    assert not looks_like_credential("max-age=31536000; includeSubDomains")


def test_redact_text_bounds_length() -> None:
    text = redact_text("x" * 5000, limit=100)
    assert text == "x" * 100 + "… (4900 more chars)"
