"""A config directory through the real control plane to a real Envoy.

The platform team's listeners, the services and the security team's policies are separate
files of one directory: an edit to any of them is live, a broken one is reported in its own
name while the last good config keeps serving, and a file added or removed counts too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.tokens import SigningKey, jwks_of

from .conftest import base_config
from .harness import Client, ControlPlane, Envoy, Upstreams, wait_until, write_config

ROUTES = [{"name": "api", "match": {"prefix": "/"}, "service": "api"}]


def policies(role: str) -> dict[str, Any]:
    """The security team's file: an issuer, a role, a policy."""
    return {
        "issuers": [
            {
                "name": "corp",
                "issuer": "https://id.example.com",
                "audiences": ["api"],
                "jwks": {"inline": json.dumps(jwks_of(SigningKey.rsa("k1")))},
            }
        ],
        "roles": [{"name": role, "permissions": [{"paths": ["/admin/**"]}]}],
        "policies": [{"name": "admins", "issuers": ["corp"], "roles": [role]}],
    }


def services(upstreams: Upstreams, api: str) -> dict[str, Any]:
    out = base_config(upstreams, 0, [])["services"]
    port = upstreams.ports[api]
    return {
        "services": [*out, {"name": "api", "endpoints": [{"address": "127.0.0.1", "port": port}]}]
    }


def errors(cp: ControlPlane) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cp.status()["config"]["errors"]
    return found


def test_each_file_of_a_directory_is_live_and_a_broken_one_is_named(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    listeners = conf / "10-listeners.yaml"
    service_file = conf / "20-services.yaml"
    policy_file = conf / "30-policies.yaml"
    write_config(
        listeners, {"listeners": base_config(upstreams, listener_port, ROUTES)["listeners"]}
    )
    write_config(service_file, services(upstreams, "alpha"))
    write_config(policy_file, policies("admin"))
    cp = ControlPlane(conf)
    envoy = Envoy(cp.xds_port)
    client = Client(listener_port)
    try:
        wait_until(lambda: client.upstream("/") == "alpha", 15, "first config")

        # 1. an edit in place (not an atomic replace) of one file: live
        service_file.write_text(yaml.safe_dump(services(upstreams, "beta"), sort_keys=False))
        wait_until(lambda: client.upstream("/") == "beta", 10, "services edit live")
        serving = cp.status()["config"]["version"]

        # 2. the security team's file edited: a new config digest, no errors
        digest = cp.status()["config"]["config_digest"]
        write_config(policy_file, policies("administrator"))
        wait_until(lambda: cp.status()["config"]["config_digest"] != digest, 10, "policy edit")
        assert errors(cp) == []

        # 3. the policy file broken: rejected in its own name, the last good config serves
        policy_file.write_text(policy_file.read_text() + "roles: [\n")
        [broken] = wait_until(lambda: errors(cp), 10, "YAML error reported")
        assert (broken["file"], broken["line"]) == (
            str(policy_file),
            len(policy_file.read_text().splitlines()) + 1,
        )
        assert "invalid YAML" in broken["message"]
        assert client.upstream("/") == "beta"
        assert cp.status()["config"]["version"] == serving

        # 4. repaired, then a second team's file defines the same policy again: both named
        write_config(policy_file, policies("administrator"))
        wait_until(lambda: not errors(cp), 10, "rejection cleared")
        team = conf / "40-team.yaml"
        write_config(team, {"policies": [{"name": "admins", "issuers": ["corp"]}]})
        [duplicate] = wait_until(lambda: errors(cp), 10, "duplicate reported")
        assert (duplicate["file"], duplicate["line"], duplicate["path"]) == (
            str(team),
            2,
            "policies[0].name",
        )
        assert f"(first defined at {policy_file}:" in duplicate["message"]
        assert client.upstream("/") == "beta"

        # 5. the file removed: the directory is valid again
        team.unlink()
        wait_until(lambda: not errors(cp), 10, "removal noticed")

        # 6. what only Envoy refuses is traced to the file and line that wrote it
        bad = {**ROUTES[0], "name": "bad", "request_headers": {"set": {"x-b": "%NOT_A_COMMAND%"}}}
        config = base_config(upstreams, listener_port, [bad, *ROUTES])
        write_config(listeners, {"listeners": config["listeners"]})
        nacked = wait_until(
            lambda: [e for e in errors(cp) if "NOT_A_COMMAND" in e["message"]], 15, "Envoy's NACK"
        )
        assert nacked[0]["file"] == str(listeners) and nacked[0]["line"]
        assert client.upstream("/") == "beta"
    finally:
        client.close()
        envoy.stop()
        cp.stop()
