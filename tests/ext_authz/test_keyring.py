"""The keyring: every reason a key is refused, the exact instant of expiry and revocation,
resync and single changes, and the batched last-use record."""

from __future__ import annotations

from typing import Any

import pytest

from ext_authz.keyring import KEY_PROBLEMS, Keyring
from ext_authz.keys.format import mint
from tests.ext_authz.keyring_support import HASHER, NOW, issue, keyring_of


def test_a_valid_key_is_accepted_with_its_record() -> None:
    key = issue()
    check = keyring_of(key).verify(key.text, NOW)
    assert check.ok and check.problem is None
    assert check.record == key.record and check.key_id == key.record.key_id


@pytest.mark.parametrize(
    "garbage",
    ["", "hello", "mgk_", "Bearer x", "mgk_" + "A" * 50, "mgk_" + "é" * 50],
)
def test_garbage_is_malformed(garbage: str) -> None:
    check = keyring_of(issue()).verify(garbage, NOW)
    assert check.problem == "malformed_key" and check.key_id is None and check.record is None


def test_a_malformed_key_never_reaches_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    key = issue()
    ring = keyring_of(key)

    class NoLookups(dict[str, Any]):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("looked up")

        def __getitem__(self, item: str) -> Any:
            raise AssertionError("looked up")

    monkeypatch.setattr(ring, "_records", NoLookups())
    broken = key.text[:-1] + ("A" if key.text[-1] != "A" else "B")  # checksum now wrong
    assert ring.verify(broken, NOW).problem == "malformed_key"


def test_a_well_formed_key_not_in_the_ring_is_unknown() -> None:
    stranger = mint()
    check = keyring_of(issue()).verify(stranger.text, NOW)
    assert check.problem == "unknown_key" and check.key_id == stranger.key_id


def test_the_right_id_with_another_secret_is_a_wrong_secret() -> None:
    key = issue()
    forged = mint(key.record.key_id)  # same public id, fresh secret, valid checksum
    check = keyring_of(key).verify(forged.text, NOW)
    assert check.problem == "wrong_secret" and check.record is None


def test_expiry_takes_effect_at_its_exact_instant() -> None:
    key = issue(expires_at=NOW)
    ring = keyring_of(key)
    assert ring.verify(key.text, NOW - 0.001).ok
    assert ring.verify(key.text, NOW).problem == "expired_key"
    assert ring.verify(key.text, NOW + 1).problem == "expired_key"


def test_revocation_takes_effect_at_its_exact_instant() -> None:
    key = issue(revoked_at=NOW)
    ring = keyring_of(key)
    assert ring.verify(key.text, NOW - 0.001).ok
    assert ring.verify(key.text, NOW).problem == "revoked_key"


def test_revoked_wins_over_expired() -> None:
    key = issue(expires_at=NOW - 10, revoked_at=NOW - 5)
    assert keyring_of(key).verify(key.text, NOW).problem == "revoked_key"


def test_the_state_of_a_key_is_told_only_to_its_holder() -> None:
    """Key ids are public: a guess with a known id must not learn that the key is revoked."""
    key = issue(revoked_at=NOW - 5)
    assert keyring_of(key).verify(mint(key.record.key_id).text, NOW).problem == "wrong_secret"


def test_every_problem_code_is_reachable() -> None:
    good, expired, revoked = issue(), issue(expires_at=NOW), issue(revoked_at=NOW)
    ring = keyring_of(good, expired, revoked)
    seen = {
        ring.verify("nope", NOW).problem,
        ring.verify(mint().text, NOW).problem,
        ring.verify(mint(good.record.key_id).text, NOW).problem,
        ring.verify(expired.text, NOW).problem,
        ring.verify(revoked.text, NOW).problem,
    }
    assert seen == set(KEY_PROBLEMS)


def test_apply_takes_a_change_at_once() -> None:
    key, new = issue(), issue()
    ring = keyring_of(key)
    assert ring.verify(new.text, NOW).problem == "unknown_key"
    ring.apply(new.record)
    assert ring.verify(new.text, NOW).ok
    ring.apply(key.record.__class__(**{**key.record.__dict__, "revoked_at": NOW}))
    assert ring.verify(key.text, NOW).problem == "revoked_key"
    assert len(ring) == 2


def test_replace_all_is_exactly_the_new_records() -> None:
    a, b = issue(), issue()
    ring = keyring_of(a)
    ring.replace_all([b.record])
    assert ring.verify(a.text, NOW).problem == "unknown_key"
    assert ring.verify(b.text, NOW).ok
    assert ring.get(a.record.key_id) is None and ring.get(b.record.key_id) == b.record


def test_last_use_is_noted_for_accepted_keys_and_taken_in_one_batch() -> None:
    a, b, revoked = issue(), issue(), issue(revoked_at=NOW - 1)
    ring = keyring_of(a, b, revoked)
    ring.verify(a.text, NOW)
    ring.verify(a.text, NOW + 5)
    ring.verify(b.text, NOW + 1)
    ring.verify(revoked.text, NOW + 2)
    ring.verify(mint(b.record.key_id).text, NOW + 3)
    assert ring.take_last_use() == {a.record.key_id: NOW + 5, b.record.key_id: NOW + 1}
    assert ring.take_last_use() == {}


def test_reprs_never_hold_the_key_or_its_digest() -> None:
    key = issue()
    ring = keyring_of(key)
    check = ring.verify(key.text, NOW)
    for text in (repr(check), repr(ring), str(check)):
        assert key.text not in text and key.record.digest not in text
    assert "h" * 32 not in repr(Keyring(HASHER))
