"""``meshgate keys``: the key shown once, list and errors by key id, never a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ext_authz.keys.format import parse
from tests.support.redis_server import redis_server


def keys(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "keys", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_whole_lifecycle_never_shows_a_key_twice(tmp_path: Path) -> None:
    made = keys(tmp_path, "create", "--name", "ci", "--tenant", "acme", "--scopes", "a,b")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    kid = parse(key).key_id
    assert f"key id {kid}: the key above is shown once" in made.stderr
    assert (tmp_path / "state/meshgate/ext_authz/keys.db").exists()

    listed = keys(tmp_path, "--json", "list")
    [rec] = json.loads(listed.stdout)
    assert rec["key_id"] == kid and rec["scopes"] == ["a", "b"] and rec["tenant"] == "acme"

    rotated = keys(tmp_path, "--json", "rotate", kid, "--grace", "1h")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert parse(new["key"]).key_id == new["key_id"] != kid
    assert f"key id {kid} stays valid until" in rotated.stderr

    revoked = keys(tmp_path, "revoke", new["key_id"])
    assert revoked.stdout.startswith(f"revoked {new['key_id']} at ")

    text = keys(tmp_path, "list").stdout
    assert f"{new['key_id']}  revoked" in text and f"replaced_by={new['key_id']}" in text
    everything = made.stderr + listed.stdout + rotated.stderr + revoked.stdout + text
    assert key not in everything and new["key"] not in everything + revoked.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["revoke", "AAAAAAAAAAAA"], "meshgate keys revoke: no key with id AAAAAAAAAAAA"),
        (["revoke", "nope"], "meshgate keys revoke: 'nope' is not a key id"),
        (
            ["create", "--name", "x", "--tenant", "t", "--expires", "1y"],
            "meshgate keys create: --expires '1y': a positive whole number and a unit",
        ),
        (["create", "--name", "x", "--tenant", "a b"], "meshgate keys create: tenant 'a b'"),
    ],
)
def test_errors_are_precise(tmp_path: Path, args: list[str], message: str) -> None:
    r = keys(tmp_path, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr


def test_a_key_given_where_an_id_belongs_is_refused_without_echo(tmp_path: Path) -> None:
    key = keys(tmp_path, "create", "--name", "x", "--tenant", "t").stdout.strip()
    r = keys(tmp_path, "revoke", key)
    assert r.returncode == 1
    assert "give the key id (from `meshgate keys list`), not the key itself" in r.stderr
    assert key not in r.stderr + r.stdout


def test_an_unusable_store_is_named(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    r = keys(tmp_path, "--store", str(tmp_path / "dir.db"), "list")
    assert r.returncode == 1
    assert f"key store {tmp_path / 'dir.db'}: cannot open it: it is a directory" in r.stderr


def test_a_file_that_is_not_a_key_database_is_named_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    text = "not a database\n" * 400
    other.write_text(text)
    r = keys(tmp_path, "--store", str(other), "list")
    assert r.returncode == 1
    assert f"key store {other}: cannot open it: file is not a database" in r.stderr
    assert other.read_text() == text


@pytest.mark.integration
def test_keys_in_a_shared_redis_store(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis", "--requirepass", "s3cret-pass") as url:
        shared = url.replace("redis://", "redis://:s3cret-pass@", 1)
        made = keys(tmp_path, "--store", shared, "create", "--name", "r", "--tenant", "t")
        assert made.returncode == 0, made.stderr
        kid = parse(made.stdout.strip()).key_id
        listed = keys(tmp_path, "--store", shared, "--json", "list")
        assert [r["key_id"] for r in json.loads(listed.stdout)] == [kid]
        wrong = keys(tmp_path, "--store", url.replace("redis://", "redis://:nope@", 1), "list")
        assert wrong.returncode == 1 and "cannot log in" in wrong.stderr
        assert "nope" not in wrong.stderr and "s3cret-pass" not in made.stderr + listed.stderr
