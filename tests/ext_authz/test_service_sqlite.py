"""``python -m ext_authz`` over a SQLite store, as a real process on real sockets: keys made
and revoked by the CLI in other processes take effect in the running service."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ext_authz.stores.sqlite import SqliteKeyStore
from tests.ext_authz.service_process import AuthzProcess, keys_cli
from tests.support.control_plane import wait_until


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "keys.db", tmp_path / "key-hash.key"


@pytest.fixture
def service(tmp_path: Path, files: tuple[Path, Path]) -> Iterator[AuthzProcess]:
    store, hash_key = files
    keys_cli(store, hash_key, "list")  # the database and the hash key exist, as after setup
    p = AuthzProcess(tmp_path / "svc", str(store), hash_key, "--last-use-flush", "0.2")
    try:
        p.wait_ready()
        yield p
    finally:
        p.kill()


def _create(files: tuple[Path, Path]) -> dict[str, str]:
    out = keys_cli(*files, "--json", "create", "--name", "ci", "--tenant", "acme")
    issued: dict[str, str] = json.loads(out)
    return issued


def test_a_key_the_cli_creates_is_accepted_and_a_revoke_is_refused_within_a_second(
    service: AuthzProcess, files: tuple[Path, Path]
) -> None:
    issued = _create(files)
    key, key_id = issued["key"], issued["key_id"]
    service.wait_for(key, (200, "ok"), timeout=2.0)

    keys_cli(*files, "revoke", key_id)  # returns once the revoke is committed
    latency = service.wait_for(key, (401, "revoked_key"), timeout=5.0)
    print(f"revoke -> refused by the running service: {latency * 1000:.0f} ms")
    assert latency < 1.0

    metrics = service.metrics()
    assert 'meshgate_ext_authz_decisions_total{reason="ok",result="allow"}' in metrics
    assert 'meshgate_ext_authz_decisions_total{reason="revoked_key",result="deny"}' in metrics
    assert "meshgate_ext_authz_decision_seconds_count" in metrics

    assert service.terminate() == 0
    output = service.output()
    assert "serving HTTP ext_authz" in output
    assert key not in output and key[16:-6] not in output


def test_last_use_is_written_back_to_the_store(
    service: AuthzProcess, files: tuple[Path, Path]
) -> None:
    issued = _create(files)
    before = time.time()
    service.wait_for(issued["key"], (200, "ok"), timeout=2.0)

    def used() -> float | None:
        listed = json.loads(keys_cli(*files, "--json", "list"))
        return next(k["last_used_at"] for k in listed if k["key_id"] == issued["key_id"])

    assert wait_until(used, 5.0, "last use in the store") >= before - 1


def test_sigterm_stops_it_cleanly_and_it_is_not_ready_before(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    keys_cli(*files, "list")
    p = AuthzProcess(tmp_path / "svc", str(files[0]), files[1])
    try:
        p.wait_ready()
        status, body = p.readyz()
        assert (status, body["reason"]) == (200, "0 keys loaded")
        assert p.terminate() == 0
    finally:
        p.kill()


def test_a_port_in_use_fails_the_start(tmp_path: Path, files: tuple[Path, Path]) -> None:
    keys_cli(*files, "list")
    first = AuthzProcess(tmp_path / "one", str(files[0]), files[1])
    try:
        first.wait_ready()
        second = AuthzProcess(
            tmp_path / "two", str(files[0]), files[1], "--listen", f"127.0.0.1:{first.port}"
        )
        assert second.proc.wait(20) == 1
        assert "cannot start" in second.output()
    finally:
        first.kill()


def test_data_version_moves_when_another_connection_commits(tmp_path: Path) -> None:
    watcher = SqliteKeyStore(tmp_path / "k.db")
    try:
        v = watcher.data_version()
        assert watcher.data_version() == v
        keys_cli(tmp_path / "k.db", tmp_path / "h.key", "create", "--name", "a", "--tenant", "t")
        assert watcher.data_version() != v
        watcher.touch({"nosuchkeyid1": 1.0})  # its own writes do not count
        assert watcher.data_version() != v
    finally:
        watcher.close()
