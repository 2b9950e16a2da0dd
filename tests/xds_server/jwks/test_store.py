"""The JWKS cache on disk: whole files or none, private, and never trusted when damaged."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from tests.support.tokens import SigningKey, jwks_of
from xds_server.jwks import store as store_mod
from xds_server.jwks.document import parse_jwks
from xds_server.jwks.store import KeyStore, StoredKeys, StoreError, entry_name

KEYS = parse_jwks(json.dumps(jwks_of(SigningKey.rsa("k1"), SigningKey.ec("k2"))))
ENTRY = StoredKeys("corp", "url:https://idp.example/jwks", KEYS, 1_700_000_000.5, 86400.0)


def saved(tmp_path: Path) -> tuple[KeyStore, Path]:
    store = KeyStore(tmp_path / "state" / "jwks")
    store.save(ENTRY)
    return store, store.directory / entry_name(ENTRY.issuer, ENTRY.fingerprint)  # type: ignore[operator]


def test_an_entry_is_read_back_as_written(tmp_path: Path) -> None:
    store, _ = saved(tmp_path)
    assert KeyStore(store.directory).load() == [ENTRY]
    assert store.error is None


def test_the_directory_is_0700_and_files_0600(tmp_path: Path) -> None:
    store, path = saved(tmp_path)
    assert store.directory is not None
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(store.directory) == [path.name]  # no temporary file left


def test_file_names_hold_no_issuer_or_url_text(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    assert "corp" not in path.name and "idp" not in path.name
    assert len(path.stem) == 32


def test_a_failed_write_leaves_the_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path = saved(tmp_path)
    before = path.read_bytes()

    def full_disk(fd: int, data: memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    newer = StoredKeys(ENTRY.issuer, ENTRY.fingerprint, KEYS, ENTRY.fetched_at + 60, 86400)
    with pytest.raises(StoreError, match="No space left on device"):
        store.save(newer)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    assert store.error is not None and "No space left" in store.error
    store.save(newer)  # it works again: the error clears
    assert store.error is None and KeyStore(store.directory).load() == [newer]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[: len(b) // 2], "not JSON (truncated?)"),
        (lambda b: b"", "not JSON (truncated?)"),
        (lambda b: b.replace(b"1700000000.5", b"1900000000.5"), "checksum mismatch"),
        (lambda b: b.replace(b"k2", b"k3"), "checksum mismatch"),
    ],
)
def test_a_truncated_or_tampered_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    store, path = saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="meshgate.jwks"):
        assert KeyStore(store.directory).load() == []
    [record] = [r for r in caplog.records if r.getMessage() == "JWKS cache file ignored"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["file"] == str(path) and reason in fields["reason"]


def test_a_consistent_rewrite_with_keys_that_are_not_a_jwks_is_ignored(tmp_path: Path) -> None:
    """Even with a recomputed checksum, the document is validated again like a fetched one."""
    store, path = saved(tmp_path)
    raw = json.loads(path.read_bytes())
    raw.pop("sha256")
    raw["document"] = '{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}]}'
    raw["sha256"] = store_mod._checksum(raw)
    path.write_text(json.dumps(raw))
    assert KeyStore(store.directory).load() == []


def test_an_entry_moved_to_another_name_is_ignored(tmp_path: Path) -> None:
    store, path = saved(tmp_path)
    path.rename(path.with_name(entry_name("other", ENTRY.fingerprint)))
    assert KeyStore(store.directory).load() == []


def test_a_leftover_temporary_file_is_swept_once_old(tmp_path: Path) -> None:
    store, path = saved(tmp_path)
    leftover = path.with_name(f".tmp-{path.name}.12345")
    leftover.write_text("half")
    assert KeyStore(store.directory).load() == [ENTRY]
    assert leftover.exists()  # young: maybe another control plane's write in progress
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    KeyStore(store.directory).load()
    assert not leftover.exists()


def test_an_unwritable_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    store = KeyStore(blocked / "jwks")
    with pytest.raises(StoreError, match="cannot create"):
        store.save(ENTRY)
    assert store.error is not None and store.load() == []


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(StoreError, match="is a symlink"):
        KeyStore(tmp_path / "link").save(ENTRY)


def test_no_directory_means_memory_only(tmp_path: Path) -> None:
    assert KeyStore(None).load() == []
    assert KeyStore(tmp_path / "never-created").load() == []
    assert not (tmp_path / "never-created").exists()
