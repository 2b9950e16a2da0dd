"""Secrets named by the config, through the real control plane and a real Envoy.

The control plane reads each ``SecretRef`` (an environment variable of its own, or a file
next to the config) when it compiles; a secret it cannot read rejects the edit with the
place in the file, and the last good config keeps serving. The values appear nowhere an
operator looks: the control plane's log, ``meshgate status``, Envoy's config dump,
``meshgate render`` and ``meshgate validate``. A secret file is watched like the config's
own files: rotating it reaches Envoy over SDS without an edit of the config.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.paths import ROOT
from tests.support.browser import Browser
from tests.support.oidc_provider import OidcProvider

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
        f"secret file '{config_file.parent / 'secrets' / 'nope.key'}': file not found"
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


OLD_CLIENT = "cl1ent-0ld-5e7a9c1d3b"
NEW_CLIENT = "cl1ent-n3w-8f2b6d4e0a"
LOGIN_HMAC = "hmac-L0gin-6f0e2b1d9c8a7f6e5d4c3b2a1908f7e6"


def secret_volume(root: Path, files: dict[str, str], generation: str) -> None:
    """Write ``files`` as the kubelet writes a Secret volume: into a new directory, then
    ``..data`` swapped to it in one rename; each name is a symlink through ``..data``."""
    data = root / f"..{generation}"
    data.mkdir()
    for name, value in files.items():
        (data / name).write_text(value + "\n")
    swap = root / "..data_tmp"
    swap.symlink_to(data.name)
    os.replace(swap, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


def listener_version(envoy: Envoy) -> str:
    dump = json.loads(envoy.process.admin_get("/config_dump?resource=dynamic_listeners"))
    [listener] = [c for c in dump["configs"] if c["name"] == "public"]
    return str(listener["active_state"]["version_info"])


def test_a_rotated_secret_file_reaches_envoy_over_sds_without_touching_the_config(
    tmp_path: Path, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    volume = tmp_path / "secrets"
    volume.mkdir()
    secret_volume(volume, {"client-secret": OLD_CLIENT, "hmac": LOGIN_HMAC}, "2026_01")
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(OidcProvider("gateway", OLD_CLIENT))
        config = base_config(
            upstreams,
            listener_port,
            [
                {"match": {"path": "/healthz"}, "public": True, "service": "alpha"},
                {"match": {"prefix": "/"}, "service": "alpha", "login": "corp"},
            ],
        )
        config["logins"] = [
            {
                "name": "corp",
                "provider": "oidc",
                "client_id": idp.client_id,
                "client_secret": {"file": "secrets/client-secret"},
                "hmac_secret": {"file": "secrets/hmac"},
                "authorization_endpoint": idp.authorization_endpoint,
                "token_endpoint": idp.token_endpoint,
            }
        ]
        write_config(config_file, config)
        cp = ControlPlane(config_file)
        stack.callback(cp.stop)
        envoy = Envoy(cp.xds_port)
        stack.callback(envoy.stop)
        base = f"http://127.0.0.1:{listener_port}"

        def signs_in() -> bool:
            return Browser().navigate(base + "/page").status_code == 200

        wait_until(lambda: Browser().get(base + "/healthz").status_code == 200, 15, "serving")
        assert signs_in()
        before = cp.status()
        listeners = envoy.stats("listener_manager.listener_")
        version = listener_version(envoy)

        # the provider wants the new client secret from now on; the config file stays as it is
        idp.client_secret = NEW_CLIENT
        assert not signs_in()
        secret_volume(volume, {"client-secret": NEW_CLIENT, "hmac": LOGIN_HMAC}, "2026_02")
        wait_until(signs_in, 15, "a sign-in with the rotated client secret")

        after = cp.status()
        assert after["config"]["errors"] == []
        assert after["config"]["config_digest"] == before["config"]["config_digest"]
        assert after["config"]["version"] != before["config"]["version"]
        assert after["compile"]["last"]["result"] == "compiled"
        # only SDS changed: the listener was neither modified nor drained
        assert listener_version(envoy) == version
        now = envoy.stats("listener_manager.listener_")
        for stat in ("listener_modified", "listener_added", "listener_removed"):
            assert now[f"listener_manager.{stat}"] == listeners[f"listener_manager.{stat}"]

        places = {
            "control plane log": cp.logs(),
            "status": json.dumps(after),
            "meshgate status": meshgate("status", "--url", cp.admin_url).stdout,
            "metrics": cp.get("/metrics")[1],
            "config_dump": envoy.process.admin_get("/config_dump?include_eds"),
        }
        for value in (OLD_CLIENT, NEW_CLIENT, LOGIN_HMAC):
            for where, text in places.items():
                assert value not in text, f"a secret value in {where}"
