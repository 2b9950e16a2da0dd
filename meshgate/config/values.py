"""Value types shared by every part of the config: durations, names, ports, addresses, methods.

Each type carries its own validation and its own error message, written for the operator who
mistyped it, so that models built from them report precise, actionable errors.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from meshgate.redact import show

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
HEADER_NAME_PATTERN = r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
#: google.protobuf.Duration's range; a longer duration cannot be sent to Envoy at all.
MAX_DURATION_SECONDS = 315_576_000_000
#: Envoy's default ``max_direct_response_body_size_bytes``; a longer body is NACKed.
MAX_DIRECT_RESPONSE_BODY_BYTES = 4096


def parse_duration(value: Any) -> timedelta:
    """Accept ``"250ms"``, ``"5s"``, ``"1.5m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    elif isinstance(value, int | float):
        seconds = float(value)
        if math.isnan(seconds):
            raise ValueError("a duration must be a number of seconds or a string like '5s'")
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m is None:
            raise ValueError(
                f"invalid duration {show(value)}: use a number with a unit: ms, s, m or h "
                "(for example '250ms' or '5s')"
            )
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {show(value)}")
    if seconds > MAX_DURATION_SECONDS:
        # Checked before timedelta() so that "1e300" is an error message, not an OverflowError.
        raise ValueError(
            f"duration {show(value)} is too long: at most {MAX_DURATION_SECONDS}s "
            "(about 10000 years)"
        )
    return timedelta(seconds=seconds)


def _format_duration(value: timedelta) -> str:
    ms = round(value.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


#: A non-negative duration; ``0`` means "disabled" where Envoy gives it that meaning.
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(_format_duration, return_type=str)
]


def _check_name(value: Any) -> Any:
    """Say what a valid name looks like instead of echoing the raw regex back."""
    if isinstance(value, str) and re.match(NAME_PATTERN, value) is None:
        raise ValueError(
            f"invalid name {show(value)}: use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def check_header_name(value: Any) -> Any:
    if isinstance(value, str) and re.match(HEADER_NAME_PATTERN, value) is None:
        raise ValueError(
            f"invalid header name {show(value)}: use letters, digits and !#$%&'*+.^_`|~- only "
            "(a leading ':' for pseudo-headers)"
        )
    return value


def not_bool(value: Any) -> Any:
    """Pydantic's lax mode reads ``true`` as 1; for a port, weight or status that is a typo."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")
    return value


Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="lower-case letters, digits, '.', '_' and '-', 1-63 characters",
    ),
    BeforeValidator(_check_name),
]
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(not_bool)]

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")


def _check_method(value: Any) -> Any:
    """Methods are case-sensitive on the wire, so ``get`` is refused with a hint, not upcased."""
    if isinstance(value, str) and value not in HTTP_METHODS:
        hint = f"; did you mean {value.upper()!r}?" if value.upper() in HTTP_METHODS else ""
        raise ValueError(
            f"unknown HTTP method {show(value)} (expected one of {', '.join(HTTP_METHODS)}){hint}"
        )
    return value


HttpMethod = Annotated[
    Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"],
    BeforeValidator(_check_method),
]


def _check_ip(value: Any) -> Any:
    """Listeners bind and EDS endpoints connect to IP literals: Envoy resolves no names there."""
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"must be an IP address such as 127.0.0.1 or ::1, got {show(value)} "
                "(Envoy does not resolve host names here)"
            ) from None
    return value


IpAddress = Annotated[str, BeforeValidator(_check_ip)]


def address_key(address: str) -> str:
    """One spelling per address, so that '::' and '0:0::0' count as the same socket."""
    return ipaddress.ip_address(address).compressed


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def exactly_one(model: BaseModel, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        choices = ", ".join(f"'{f}'" for f in fields)
        found = ", ".join(f"'{f}'" for f in given) or "none"
        raise ValueError(f"{what} needs exactly one of {choices} (found: {found})")


CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def reject_control_chars(value: str, what: str = "") -> None:
    """Envoy refuses a header (and so the whole resource) with a CR, LF or other control byte."""
    bad = CONTROL_CHARS.search(value)
    if bad is not None:
        subject = f"{what} {show(value)}" if what else show(value)
        raise ValueError(
            f"{subject} contains the control character {bad.group()!r} at position "
            f"{bad.start()}; Envoy refuses it in a header"
        )


def literal_header_value(value: Any) -> Any:
    """A header value sent as written: printable, and not empty (an empty header is a typo)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        reject_control_chars(value)
    return value


#: A header value sent literally (no substitution commands).
HeaderText = Annotated[str, BeforeValidator(literal_header_value)]
