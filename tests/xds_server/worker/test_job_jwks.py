"""The compile job tells the control plane which JWKS sources the config has (no keys)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tokens import SigningKey, jwks_of
from xds_server.jwks.source import JwksSource
from xds_server.worker.job import Compiled, CompileJob, Rejected, run_job

CONFIG = """listeners:
  - name: l
    port: 8080
    virtual_hosts:
      - name: v
        routes:
          - match: {prefix: /}
            service: api
services:
  - name: api
    endpoints: [{address: 127.0.0.1, port: 9000}]
issuers:
  - name: corp
    issuer: https://idp.example
    audiences: api
    jwks: {url: "https://idp.example/jwks", refresh: 1m, timeout: 2s, max_stale: 2h}
  - name: local
    issuer: https://local
    audiences: [api]
    jwks: {file: keys/jwks.json}
  - name: fixed
    issuer: https://fixed
    audiences: api
    algorithms: [ES256]
    jwks:
      inline: %s
"""


def test_compiled_reports_url_and_file_sources_with_their_timings(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG % json.dumps(json.dumps(jwks_of(SigningKey.ec("k")))))
    outcome = run_job(CompileJob(str(path)))
    assert isinstance(outcome, Compiled), outcome
    assert outcome.jwks_sources == (
        JwksSource(
            "corp",
            "url:https://idp.example/jwks",
            "https://idp.example/jwks",
            None,
            2.0,
            60.0,
            7200.0,
            ("RS256",),  # the issuer's algorithms: which fetched keys Envoy gets
        ),
        # a relative file is relative to the config's directory; the fingerprint is as written
        JwksSource(
            "local",
            "file:keys/jwks.json",
            None,
            str(tmp_path / "keys" / "jwks.json"),
            5.0,
            300.0,
            86400.0,
            ("RS256",),
        ),
    )


def test_a_refresh_shorter_than_max_stale_allows_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    text = CONFIG % '"{}"'
    path.write_text(text.replace("max_stale: 2h", "max_stale: 30s"))
    outcome = run_job(CompileJob(str(path)))
    assert isinstance(outcome, Rejected)
    assert any(
        "'max_stale' (30s) is shorter than 'refresh' (60s)" in p.message for p in outcome.problems
    )


def test_a_relative_file_in_an_included_file_is_relative_to_that_file(tmp_path: Path) -> None:
    (tmp_path / "security").mkdir()
    (tmp_path / "security" / "issuers.yaml").write_text(
        "issuers:\n"
        "  - name: url\n"
        "    issuer: https://a\n"
        "    audiences: api\n"
        "    jwks: {url: 'https://a/jwks'}\n"
        "  - name: team\n"
        "    issuer: https://team\n"
        "    audiences: api\n"
        "    jwks: {file: keys/jwks.json}\n"
    )
    main = tmp_path / "gw.yaml"
    main.write_text("include: security/issuers.yaml\n" + CONFIG.split("issuers:")[0])
    outcome = run_job(CompileJob(str(main)))
    assert isinstance(outcome, Compiled), outcome
    [_, team] = outcome.jwks_sources
    assert team.file == str(tmp_path / "security" / "keys" / "jwks.json")
    assert team.fingerprint == "file:keys/jwks.json"
