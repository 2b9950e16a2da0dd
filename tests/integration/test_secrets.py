"""Secrets named by the config, through the real control plane and a real Envoy.

The control plane reads each ``SecretRef`` (an environment variable of its own, or a file
next to the config) when it compiles; a secret it cannot read rejects the edit with the
place in the file, and the last good config keeps serving. The values appear nowhere an
operator looks: the control plane's log, ``meshgate status``, Envoy's config dump,
``meshgate render`` and ``meshgate validate``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.paths import ROOT

from .conftest import base_config
from .harness import Client, ControlPlane, Envoy, Upstreams, wait_until, write_config

Stack = Callable[..., tuple[ControlPlane, Envoy]]

CLIENT_SECRET = "cl1ent-S3cret-value-from-env"
HMAC_SECRET = "hmac-K3y-value-from-a-file"


def with_login(config: dict[str, Any], client_env: str, hmac_file: str) -> dict[str, Any]:
    config["logins"] = [
        {
            "name": "google",
            "provider": "google",
            "client_id": "my-client",
            "client_secret": {"env": client_env},
            "hmac_secret": {"file": hmac_file},
        }
    ]
    return config


def routes(target: str) -> list[dict[str, Any]]:
    return [{"name": "api", "match": {"prefix": "/"}, "service": target}]


def meshgate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_missing_secrets_reject_the_edit_and_values_never_show(
    stack: Stack,
    config_file: Path,
    upstreams: Upstreams,
    listener_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MG_IT_CLIENT_SECRET", CLIENT_SECRET)  # the control plane inherits it
    monkeypatch.delenv("MG_IT_UNSET", raising=False)
    (config_file.parent / "secrets").mkdir()
    (config_file.parent / "secrets" / "hmac.key").write_text(HMAC_SECRET + "\n")

    cp, envoy = stack(routes("alpha"))
    client = Client(listener_port)
    wait_until(lambda: client.upstream("/") == "alpha", 15, "first config")

    def edit(config: dict[str, Any], path: str) -> list[dict[str, Any]]:
        """Write ``config`` and wait for its rejection (a problem at ``path``)."""
        write_config(config_file, config)
        found: list[dict[str, Any]] = wait_until(
            lambda: [e for e in cp.status()["config"]["errors"] if e["path"] == path],
            10,
            f"a problem at {path}",
        )
        return found

    # a config with secrets both readable: published
    good = with_login(
        base_config(upstreams, listener_port, routes("beta")),
        "MG_IT_CLIENT_SECRET",
        "secrets/hmac.key",  # relative to the config file's directory
    )
    write_config(config_file, good)
    wait_until(lambda: client.upstream("/") == "beta", 10, "config with secrets published")
    published = cp.status()["config"]["version"]

    # an environment variable the control plane does not have: rejected, at its place
    unset = with_login(
        base_config(upstreams, listener_port, routes("gamma")), "MG_IT_UNSET", "secrets/hmac.key"
    )
    [error] = edit(unset, "logins[0].client_secret.env")
    assert error["line"] is not None and error["column"] is not None
    assert error["message"] == (
        "environment variable MG_IT_UNSET is not set (the control plane reads the secret from "
        "its own environment)"
    )
    assert cp.status()["config"]["version"] == published
    assert client.upstream("/") == "beta"

    # a file that is not there
    missing = with_login(
        base_config(upstreams, listener_port, routes("gamma")),
        "MG_IT_CLIENT_SECRET",
        "secrets/nope.key",
    )
    [error] = edit(missing, "logins[0].hmac_secret.file")
    assert error["message"] == (
        f"secret file '{config_file.parent / 'secrets' / 'nope.key'}': not found"
    )
    assert client.upstream("/") == "beta"

    # back to good: published again (same content as before, so the same snapshot)
    write_config(config_file, good)
    wait_until(lambda: cp.status()["config"]["errors"] == [], 10, "errors cleared")
    assert cp.status()["config"]["version"] == published

    # nowhere in clear
    render = meshgate("render", config_file)
    validate = meshgate("validate", config_file)
    assert render.returncode == 0 and validate.returncode == 0, render.stderr + validate.stderr
    places = {
        "control plane log": cp.logs(),
        "status": json.dumps(cp.status()),
        "config_dump": envoy.process.admin_get("/config_dump?include_eds"),
        "render": render.stdout + render.stderr,
        "validate": validate.stdout + validate.stderr,
    }
    for value in (CLIENT_SECRET, HMAC_SECRET):
        for where, text in places.items():
            assert value not in text, f"a secret value in {where}"

    # and validate says what render says about a missing secret
    write_config(config_file, unset)
    result = meshgate("validate", config_file)
    assert result.returncode == 1
    assert "logins[0].client_secret.env: environment variable MG_IT_UNSET is not set" in (
        result.stderr
    )
