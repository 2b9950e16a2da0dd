"""The keyed hash: what a store keeps, and the hash key file it is keyed with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ext_authz.keys.format import mint
from ext_authz.keys.hashing import HashKeyError, KeyHasher, load_or_create_hash_key


def test_the_digest_is_keyed_and_matches_only_its_key() -> None:
    a, b = KeyHasher(b"a" * 32), KeyHasher(b"b" * 32)
    key = mint().text
    assert a.digest(key) != b.digest(key)  # a stolen database alone checks no guess
    assert a.matches(key, a.digest(key))
    assert not a.matches(mint().text, a.digest(key))
    assert key not in a.digest(key) and "a" * 32 not in repr(a)


def test_a_short_hash_key_is_refused() -> None:
    with pytest.raises(HashKeyError, match="at least 32"):
        KeyHasher(b"x" * 16)


def test_the_hash_key_file_is_created_private_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "key-hash.key"
    first = load_or_create_hash_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = load_or_create_hash_key(path)
    key = mint().text
    assert first.digest(key) == again.digest(key)
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    ("content", "why"), [("zz-not-hex\n", "not hex"), ("abcd\n", "2 bytes, at least 32")]
)
def test_a_bad_hash_key_file_is_named_with_why(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(HashKeyError, match=why) as err:
        load_or_create_hash_key(path)
    assert str(path) in str(err.value) and content.strip() not in str(err.value)


def test_a_missing_file_is_an_error_when_creating_is_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(HashKeyError, match="no key-hash key file"):
        load_or_create_hash_key(tmp_path / "none", create=False)
