"""How a config value may appear in a message: a short, escaped excerpt, or not at all.

Error messages travel far: to terminals, JSON logs shipped to collectors, ``/status`` and
``meshgate status``. A value quoted in full can be megabytes long, can carry terminal control
characters, and can be a credential an operator pasted into a header. So every message that
echoes a config value goes through :func:`show`:

- at most :data:`EXCERPT_CHARS` characters, then ``…`` and the full length;
- control and other unprintable characters escaped (``\\r``, ``\\x01``), so a value can neither
  forge a second log line nor drive a terminal;
- a value that looks like a credential (``Bearer …``, ``Basic …``, a JWT, ``password=…``) or
  that sits in a credential-bearing field or header (Authorization, Cookie, X-Api-Key, anything
  named *token*, *secret*, *password*, *key*, *auth*, *credential*) shown only as
  ``<redacted, N chars>``.

:func:`redact_text` does the same for free text we did not write (Envoy's NACK and objection
messages quote config values back).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: How many characters of a value a message may quote.
EXCERPT_CHARS = 24
#: Longest free text (an Envoy NACK) kept in status and logs.
MAX_TEXT_CHARS = 2000

#: Header names whose values are credentials whatever they look like.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
    }
)
#: A field or header whose name contains one of these carries credentials.
_SENSITIVE_WORDS = re.compile(r"token|secret|passw|credential|key|auth(?!ority)|private|signature")

#: Values that are credentials by their shape, wherever they appear.
_CREDENTIAL_SHAPES = re.compile(
    r"(?i)"
    r"\b(?:bearer|basic|digest|negotiate|ntlm|token|apikey)\s+\S"  # an Authorization scheme
    r"|\beyJ[\w-]{4,}\.[\w-]{4,}"  # a JWT (base64url of '{"')
    r"|-----BEGIN [A-Z ]*PRIVATE KEY"
    r"|(?:token|secret|passw\w*|api[_-]?key|access[_-]?key|credential\w*)\s*[=:]\s*\S"
)

#: In free text: a credential after an Authorization scheme, or after a key=/key: that names one.
_TEXT_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest|negotiate|ntlm|apikey)(\s+)[^\s\"',;)}\]]+")
_TEXT_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}(?:\.[\w-]*)?")
_TEXT_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END[^-]*-----|$)", re.S
)
_TEXT_ASSIGNMENT = re.compile(
    r"(?i)((?:authorization|cookie|[\w-]*(?:token|secret|passw|credential|api[_-]?key|auth(?!ority))"
    r"[\w-]*)[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;)}\]]+)"
)
#: Envoy prints a header as ``key: "authorization" value: "..."`` in proto text.
_TEXT_HEADER_PAIR = re.compile(
    r"(?i)(key:\s*\"([^\"]*)\"\s*,?\s*value:\s*)(\"[^\"]*\")",
)


def is_sensitive_name(name: str, header: bool = True) -> bool:
    """Whether a header (or, with ``header=False``, a config field) called ``name`` may
    carry a credential. Only headers are judged by the list of credential headers: a config
    field named ``cookie`` describes a cookie, it does not hold one."""
    lowered = name.lower()
    if header and lowered in SENSITIVE_HEADERS:
        return True
    return _SENSITIVE_WORDS.search(lowered) is not None


def looks_like_credential(value: str) -> bool:
    """Whether ``value`` has the shape of a credential (an Authorization value, a JWT...)."""
    return _CREDENTIAL_SHAPES.search(value) is not None


def redacted(value: object) -> str:
    """What is left of a value that must not be shown: its length."""
    return f"<redacted, {len(str(value))} chars>"


def escape(text: str) -> str:
    """Unprintable characters as escapes; everything else (backslashes too) as written."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``text``, escaped, with ``…`` and the full length when it was cut."""
    if len(text) <= limit:
        return escape(text)
    return f"{escape(text[:limit])}…"


def show(value: object, *, sensitive: bool = False, limit: int = EXCERPT_CHARS) -> str:
    """A config value as a message may quote it (see the module docstring)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        try:
            text = str(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return "a very large integer"
        if sensitive:
            return redacted(text)
        return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} digits)"
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    if sensitive or looks_like_credential(value):
        return redacted(value)
    quote = "'" if "'" not in value or '"' in value else '"'
    if len(value) <= limit:
        return f"{quote}{escape(value)}{quote}"
    return f"{quote}{excerpt(value, limit)}{quote} ({len(value)} chars)"


def show_name(name: str, limit: int = EXCERPT_CHARS) -> str:
    """A name (a header, an anchor) quoted without redaction: names are not secrets."""
    return f"'{excerpt(name, limit)}'"


def hide_values(message: str, values: Iterable[object]) -> str:
    """``message`` with every way :func:`show` may have quoted ``values`` replaced by
    ``<redacted, N chars>``: for a message written before anyone knew the field was secret."""
    for value in values:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            continue
        text = str(value)
        hidden = redacted(text)
        for form in (show(value), repr(value), text if len(text) >= 4 else None):
            if form and form != hidden:
                message = message.replace(form, hidden)
    return message


def redact_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Free text (an Envoy NACK) with anything credential-shaped replaced, escaped, bounded."""
    text = _TEXT_PRIVATE_KEY.sub("<redacted private key>", text)
    text = _TEXT_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    text = _TEXT_JWT.sub("<redacted>", text)
    text = _TEXT_HEADER_PAIR.sub(
        lambda m: m.group(1) + ('"<redacted>"' if is_sensitive_name(m.group(2)) else m.group(3)),
        text,
    )
    text = _TEXT_ASSIGNMENT.sub(lambda m: f"{m.group(1)}<redacted>", text)
    text = "\n".join(escape(line) for line in text.split("\n"))
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more chars)"
    return text
