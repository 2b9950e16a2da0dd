"""The API key format: prefix, id, secret, checksum; garbage refused without a lookup."""

from __future__ import annotations

import pytest

from ext_authz.keys.format import KEY_LEN, PREFIX, KeyFormatError, checksum, mint, parse


def test_a_minted_key_parses_back_to_its_id() -> None:
    key = mint()
    assert key.text.startswith(PREFIX) and len(key.text) == KEY_LEN
    assert parse(key.text) == key
    assert key.key_id == key.text[len(PREFIX) : len(PREFIX) + 12]


def test_keys_are_unique_and_repr_hides_the_secret() -> None:
    keys = {mint().text for _ in range(2000)}
    assert len(keys) == 2000
    k = mint()
    assert k.text not in repr(k) and k.key_id in repr(k)


def _flip(text: str, i: int) -> str:
    c = "A" if text[i] != "A" else "B"
    return text[:i] + c + text[i + 1 :]


@pytest.mark.parametrize("where", [4, 10, 20, 40, KEY_LEN - 1])
def test_any_changed_character_fails_the_checksum(where: int) -> None:
    text = mint().text
    with pytest.raises(KeyFormatError, match="checksum does not match"):
        parse(_flip(text, where))


@pytest.mark.parametrize(
    ("presented", "why"),
    [
        ("", "no mgk_ prefix"),
        ("Bearer abc", "no mgk_ prefix"),
        ("ghp_" + "a" * 50, "no mgk_ prefix"),
        ("mgk_short", "malformed API key \\(9 characters, a key has 54\\)"),
        ("mgk_" + "a" * 200, "malformed API key \\(204 characters"),
        ("mgk_" + "-" * 50, "characters outside base62"),
        ("mgk_" + "é" * 50, "characters outside base62"),
        ("mgk_" + "\x00" * 50, "characters outside base62"),
    ],
)
def test_garbage_is_refused_with_a_reason_that_never_echoes_it(presented: str, why: str) -> None:
    with pytest.raises(KeyFormatError, match=why) as err:
        parse(presented)
    if len(presented) > 8:
        assert presented not in str(err.value)


def test_the_checksum_is_a_crc_of_the_body_in_six_base62_characters() -> None:
    key = mint()
    assert checksum(key.text[:-6]) == key.text[-6:]
    assert len(checksum("")) == 6


def test_a_fixture_may_name_its_key_id_but_only_a_valid_one() -> None:
    assert mint("Abcdef012345").key_id == "Abcdef012345"
    with pytest.raises(ValueError):
        mint("short")
