"""The control plane's JWKS manager against a real HTTP identity provider (no Envoy here; the
same stories through Envoy are in test_jwks_envoy.py).

The control plane runs as in production (``python -m xds_server``, validator ``none`` since
no listener needs judging here) with a private ``--state-dir``; the identity provider is
:class:`tests.support.jwks_server.JwksServer`, which can rotate keys, break and stop.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.envoy_process import free_port
from tests.support.control_plane import wait_until
from tests.support.jwks_server import JwksServer
from tests.support.staff_gateway import staff_config
from tests.support.tokens import SigningKey, jwks_of

from .harness import ROOT, ControlPlane, write_config

K1, K2 = SigningKey.ec("k1"), SigningKey.ec("k2")


def config(url: str, refresh: str = "1s", max_stale: str = "1h") -> dict[str, Any]:
    jwks = {"url": url, "refresh": refresh, "max_stale": max_stale, "timeout": "1s"}
    return staff_config(jwks, port=free_port(), address="127.0.0.1")


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with JwksServer(jwks_of(K1)) as server:
        yield server


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ControlPlane]]:
    planes: list[ControlPlane] = []
    yield planes
    for plane in planes:
        plane.stop()


def start(
    tmp_path: Path, started: list[ControlPlane], cfg: dict[str, Any], state: Path | None = None
) -> ControlPlane:
    path = tmp_path / "gateway.yaml"
    write_config(path, cfg)
    state_dir = state or tmp_path / "state"
    cp = ControlPlane(path, validator="none", extra_args=("--state-dir", str(state_dir)))
    started.append(cp)
    return cp


def corp(cp: ControlPlane) -> dict[str, Any]:
    [issuer] = cp.status()["jwks"]["issuers"]
    assert issuer["issuer"] == "corp"
    return dict(issuer)


def wait_state(cp: ControlPlane, state: str, timeout: float = 10) -> dict[str, Any]:
    return wait_until(
        lambda: (i := corp(cp))["state"] == state and i, timeout, f"issuer state {state}"
    )


def test_keys_are_fetched_kept_on_disk_and_survive_an_outage_and_a_restart(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    cp = start(tmp_path, started, config(idp.url))
    fresh = wait_until(lambda: (i := corp(cp))["keys"] == 1 and i, 10, "keys fetched")
    assert fresh["state"] == "fresh" and fresh["kids"] == ["k1"]
    assert fresh["source"] == f"url {idp.url}"
    [cached] = list((tmp_path / "state" / "jwks").iterdir())
    assert stat.S_IMODE(os.stat(cached.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o600
    metrics = cp.metrics()
    assert metrics['meshgate_jwks_keys{issuer="corp"}'] == 1.0
    assert metrics['meshgate_jwks_fetches_total{issuer="corp",outcome="updated"}'] == 1.0
    assert metrics['meshgate_jwks_state{issuer="corp",state="fresh"}'] == 1.0
    assert 0 <= metrics['meshgate_jwks_key_age_seconds{issuer="corp"}'] < 5

    # the keys went into a compile of their own; refreshes with the same keys add none
    wait_until(lambda: not cp.status()["jwks"]["pending"], 10, "keys compiled")
    generation = cp.status()["compile"]["last"]["generation"]
    idp.wait_for_requests(idp.requests + 2)
    assert cp.status()["compile"]["last"]["generation"] == generation
    assert cp.metrics()['meshgate_jwks_fetches_total{issuer="corp",outcome="unchanged"}'] >= 1

    # the identity provider goes down: the last good keys keep serving
    idp.stop()
    stale = wait_state(cp, "stale")
    assert stale["keys"] == 1 and stale["last_error"].startswith("cannot connect")
    assert stale["stale_since"] is not None

    # and a restart while it is down publishes them from disk, in the first compile
    cp.kill()
    cp.start()
    status = cp.status()
    [issuer] = status["jwks"]["issuers"]
    assert issuer["keys"] == 1 and issuer["kids"] == ["k1"]
    assert status["jwks"]["pending"] is False
    assert wait_state(cp, "stale")["keys"] == 1
    assert cp.status()["compile"]["last"]["generation"] == 2  # keys from disk, then the file


def test_rotation_at_the_idp_is_followed_within_the_refresh_interval(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    cp = start(tmp_path, started, config(idp.url))
    wait_until(lambda: corp(cp)["kids"] == ["k1"], 10, "k1")
    idp.document = jwks_of(K1, K2)
    wait_until(lambda: corp(cp)["kids"] == ["k1", "k2"], 5, "k2 added")
    idp.document = jwks_of(K2)
    wait_until(lambda: corp(cp)["kids"] == ["k2"], 5, "k1 withdrawn")
    wait_until(lambda: not cp.status()["jwks"]["pending"], 10, "keys compiled")


def test_an_invalid_answer_keeps_the_last_good_keys(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    cp = start(tmp_path, started, config(idp.url))
    wait_until(lambda: corp(cp)["keys"] == 1, 10, "keys fetched")
    idp.document = b'{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]}'
    stale = wait_state(cp, "stale")
    assert stale["kids"] == ["k1"]
    assert "holds private key material ('d')" in stale["last_error"]
    assert cp.metrics()['meshgate_jwks_fetches_total{issuer="corp",outcome="invalid"}'] >= 1


def test_unreachable_at_first_start_means_no_keys_and_says_why(
    tmp_path: Path, started: list[ControlPlane]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/jwks"
    cp = start(tmp_path, started, config(closed))
    issuer = wait_until(lambda: (i := corp(cp))["last_error"] and i, 10, "a failed fetch")
    assert issuer["state"] == "never_fetched" and issuer["keys"] == 0
    assert issuer["last_error"].startswith("cannot connect")
    assert cp.metrics()['meshgate_jwks_keys{issuer="corp"}'] == 0.0
    result = subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "status", "--url", cp.admin_url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2, result.stdout
    assert "corp  NEVER FETCHED  no keys: its tokens are refused (401); last error: cannot " in (
        result.stdout
    )
    log = cp.logs()
    assert "cannot fetch signing keys and none are in force" in log and "corp" in log


def test_keys_older_than_max_stale_are_dropped(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    cp = start(tmp_path, started, config(idp.url, refresh="1s", max_stale="2s"))
    wait_until(lambda: corp(cp)["keys"] == 1, 10, "keys fetched")
    idp.stop()
    expired = wait_state(cp, "expired", timeout=10)
    assert expired["keys"] == 0 and expired["kids"] == []
    assert cp.metrics()['meshgate_jwks_keys{issuer="corp"}'] == 0.0
    wait_until(lambda: not cp.status()["jwks"]["pending"], 10, "the drop compiled")
    assert "signing keys expired" in cp.logs()
    # a restart does not bring them back from disk either
    cp.kill()
    cp.start()
    assert corp(cp)["keys"] == 0


def test_an_unwritable_cache_is_reported_and_keys_serve_from_memory(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    cp = start(tmp_path, started, config(idp.url), state=blocked)
    wait_until(lambda: corp(cp)["keys"] == 1, 10, "keys fetched")
    cache = wait_until(lambda: cp.status()["jwks"]["cache"]["error"], 10, "cache error")
    assert cache.startswith(f"cannot create {blocked}/jwks")
    assert "cannot write the JWKS cache" in cp.logs()


def test_keys_changed_while_the_config_is_rejected_still_reach_the_published_snapshot(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    cfg = config(idp.url)
    cp = start(tmp_path, started, cfg)
    wait_until(lambda: corp(cp)["keys"] == 1, 10, "keys fetched")
    wait_until(lambda: not cp.status()["jwks"]["pending"], 10, "keys compiled")
    good = cp.status()["config"]
    broken = {**cfg, "services": [{"name": "api", "endpoints": [{"address": "x", "port": 0}]}]}
    write_config(tmp_path / "gateway.yaml", broken)
    wait_until(lambda: cp.status()["config"]["errors"], 10, "the edit rejected")
    idp.document = jwks_of(K1, K2)
    wait_until(lambda: corp(cp)["kids"] == ["k1", "k2"], 5, "k2 fetched")
    # the published snapshot takes the new keys; the config stays the last good one, and
    # its rejection stands
    status = wait_until(
        lambda: (s := cp.status())["config"]["version"] != good["version"] and s, 10, "re-keyed"
    )
    assert status["jwks"]["pending"] is False
    assert status["config"]["errors"] and status["config"]["config_digest"] == good["config_digest"]
    assert "signing keys put into the published snapshot" in cp.logs()
    assert cp.metrics()['meshgate_config_reloads_total{result="amended"}'] == 1.0
    assert cp.metrics()["meshgate_config_valid"] == 0.0
    rekeyed = status["config"]["version"]
    # fixing the file compiles the same keys into the same snapshot: nothing new to publish
    write_config(tmp_path / "gateway.yaml", cfg)
    wait_until(lambda: not cp.status()["config"]["errors"], 10, "the fix accepted")
    assert cp.status()["config"]["version"] == rekeyed


def test_keys_past_max_stale_are_dropped_while_the_config_is_rejected(
    tmp_path: Path, idp: JwksServer, started: list[ControlPlane]
) -> None:
    cfg = config(idp.url, refresh="1s", max_stale="3s")
    cp = start(tmp_path, started, cfg)
    wait_until(lambda: corp(cp)["keys"] == 1, 10, "keys fetched")
    wait_until(lambda: not cp.status()["jwks"]["pending"], 10, "keys compiled")
    write_config(tmp_path / "gateway.yaml", {**cfg, "listeners": "not a list"})
    wait_until(lambda: cp.status()["config"]["errors"], 10, "the edit rejected")
    with_keys = cp.status()["config"]["version"]
    idp.stop()
    wait_state(cp, "expired", timeout=15)
    status = wait_until(
        lambda: (s := cp.status())["config"]["version"] != with_keys and s, 10, "keys dropped"
    )
    assert status["jwks"]["pending"] is False and status["config"]["errors"]
