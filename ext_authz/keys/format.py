"""The API key format: ``mgk_`` + key id + secret + checksum, all base62.

Why this shape:

* the ``mgk_`` prefix makes a leaked key findable by secret scanners (and by a human);
* the 12-character key id is public: it names the key in ``meshgate keys list``, the audit
  trail and rate-limit descriptors, and is how the store finds the record, so no lookup
  needs the secret;
* the 32-character secret carries ~190 bits of entropy, which is why a fast keyed hash
  (not a password hash) is the right way to store it;
* the 6-character CRC-32 checksum lets a typo, a truncated paste or a random guess be
  refused without touching the store, and lets scanners tell a real key from look-alikes.

The checksum is not a secret and not a MAC: it guards against garbage, the keyed hash
guards against forgery.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass

PREFIX = "mgk_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LEN = 12
SECRET_LEN = 32
CHECKSUM_LEN = 6
KEY_LEN = len(PREFIX) + ID_LEN + SECRET_LEN + CHECKSUM_LEN
_CHARS = frozenset(ALPHABET)


@dataclass(frozen=True)
class ParsedKey:
    """A key that is well-formed and whose checksum holds; ``text`` is the whole secret key."""

    key_id: str
    text: str

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"ParsedKey(key_id={self.key_id!r})"


class KeyFormatError(ValueError):
    """Why a presented string is not an API key; the message never repeats the string."""


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def _random(width: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(width))


def checksum(body: str) -> str:
    """CRC-32 of ``body`` (prefix, id and secret) in 6 base62 characters."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LEN)


def new_key_id() -> str:
    return _random(ID_LEN)


def mint(key_id: str | None = None) -> ParsedKey:
    """A fresh key; ``key_id`` only in tests, so that fixtures can name their keys."""
    kid = key_id or new_key_id()
    if len(kid) != ID_LEN or not set(kid) <= _CHARS:
        raise ValueError(f"a key id is {ID_LEN} base62 characters")
    body = PREFIX + kid + _random(SECRET_LEN)
    return ParsedKey(kid, body + checksum(body))


def parse(presented: str) -> ParsedKey:
    """The key in ``presented``, or KeyFormatError saying what is wrong with it (never
    echoing it). Costs no store lookup: this is what turns garbage away cheaply."""
    if not presented.startswith(PREFIX):
        raise KeyFormatError(f"not a meshgate API key (no {PREFIX} prefix)")
    if len(presented) != KEY_LEN:
        raise KeyFormatError(
            f"malformed API key ({len(presented)} characters, a key has {KEY_LEN})"
        )
    rest = presented[len(PREFIX) :]
    if not set(rest) <= _CHARS:
        raise KeyFormatError("malformed API key (characters outside base62)")
    body, check = presented[:-CHECKSUM_LEN], presented[-CHECKSUM_LEN:]
    if checksum(body) != check:
        raise KeyFormatError("malformed API key (checksum does not match)")
    return ParsedKey(rest[:ID_LEN], presented)


def key_id_argument(text: str, listed_by: str) -> str:
    """``text`` where a key id is asked for (rotate, revoke), or ValueError saying why; a
    whole key given by mistake is refused without being echoed."""
    if text.startswith(PREFIX):
        raise ValueError(f"give the key id (from {listed_by}), not the key itself")
    if not looks_like_key_id(text):
        raise ValueError(f"{text!r} is not a key id (12 letters and digits)")
    return text


def looks_like_key_id(text: str) -> bool:
    """A key id as the CLI and admin API accept it (the public part, never the key)."""
    return len(text) == ID_LEN and set(text) <= _CHARS
