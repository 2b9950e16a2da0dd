"""The readable rendering of JSON log lines for a terminal (a pure function)."""

from __future__ import annotations

import json
import time

from meshgate.runtime.log_text import TextFormatter


def fmt(**kw: object) -> TextFormatter:
    # UTC as the "local" zone and a fixed clock: the output does not depend on the machine
    return TextFormatter(localtime=time.gmtime, now=lambda: 1_800_000_000.0, **kw)  # type: ignore[arg-type]


ACCESS = {
    "time": "2026-11-26T17:24:43.248Z",
    "request_id": "8a73a1ae",
    "method": "GET",
    "path": "/api/hello",
    "authority": "127.0.0.1:8080",
    "status": 200,
    "flags": "-",
    "details": "via_upstream",
    "route": "api",
    "upstream_cluster": "echo-a",
    "duration_ms": 3,
    "variant": None,
}


def line(record: dict[str, object]) -> bytes:
    return json.dumps(record).encode()


def test_access_log_line() -> None:
    out = fmt().format("envoy", "access", line(ACCESS))
    assert out == b"17:24:43 access        GET /api/hello 200 3ms echo-a\n"


def test_access_log_line_shows_flags_details_and_variant_when_they_say_something() -> None:
    r = {
        **ACCESS,
        "status": 503,
        "flags": "UF",
        "details": "upstream_reset_before_response_started{connection_failure}",
        "variant": "v2",
        "duration_ms": 12,
    }
    out = fmt().format("envoy", "access", line(r)).decode()
    assert out == (
        "17:24:43 access        GET /api/hello 503 12ms echo-a variant=v2 UF "
        "(upstream_reset_before_response_started{connection_failure})\n"
    )
    direct = {**ACCESS, "path": "/healthz", "upstream_cluster": None, "details": "direct_response"}
    assert fmt().format("envoy", "access", line(direct)) == (
        b"17:24:43 access        GET /healthz 200 3ms (direct_response)\n"
    )


def test_control_plane_log_line_with_fields() -> None:
    r = {
        "time": "2026-11-26T17:24:44.001Z",
        "level": "info",
        "service": "xds_server",
        "logger": "meshgate.publisher",
        "message": "snapshot published",
        "version": "b7770d6702b8e1ef",
        "validated_by": "canary",
        "errors": 0,
        "file": "/home/me/my gateway.yaml",
    }
    out = fmt().format("control-plane", "log", line(r)).decode()
    assert out == (
        "17:24:44 control-plane INFO  snapshot published version=b7770d6702b8e1ef "
        'validated_by=canary errors=0 file="/home/me/my gateway.yaml"\n'
    )


def test_envoy_own_line_and_levels() -> None:
    r = {
        "time": "2026-11-26T17:24:45.100Z",
        "level": "warning",
        "service": "envoy",
        "logger": "config",
        "message": "gRPC config stream to meshgate_xds closed: 14, connection error",
    }
    out = fmt().format("envoy", "log", line(r)).decode()
    assert out == (
        "17:24:45 envoy         WARN  gRPC config stream to meshgate_xds closed: 14, "
        "connection error\n"
    )
    colored = fmt(color=True).format("envoy", "log", line({**r, "level": "error"})).decode()
    assert "\033[31mERROR\033[0m" in colored
    assert "\033[" not in out


def test_list_fields_and_exceptions_follow_on_their_own_lines() -> None:
    r = {
        "time": "2026-11-26T17:24:46.000Z",
        "level": "error",
        "message": "control plane crashed 5 times within 60 s; giving up",
        "child": "control plane",
        "stderr_tail": ["first line", "last line"],
        "exception": "Traceback (most recent call last):\n  boom",
    }
    out = fmt(fields=False).format("meshgate", "log", line(r)).decode()
    assert out.splitlines() == [
        "17:24:46 meshgate      ERROR control plane crashed 5 times within 60 s; giving up",
        "    | first line",
        "    | last line",
        "    Traceback (most recent call last):",
        "      boom",
    ]


def test_lines_that_are_not_json_objects_are_kept_as_they_are() -> None:
    f = fmt()
    assert f.format("echo-a", "log", b"plain words") == b"08:00:00 echo-a        plain words\n"
    assert f.format("envoy", "access", b"{not json") == b"08:00:00 envoy         {not json\n"
    assert f.format("x", "log", b"[1, 2]") == b"08:00:00 x             [1, 2]\n"


def test_time_stamps_convert_to_the_local_zone() -> None:
    plus_two = TextFormatter(localtime=lambda t: time.gmtime(t + 7200))
    out = plus_two.format("envoy", "access", line(ACCESS))
    assert out.startswith(b"19:24:43 access")


def test_terminal_escapes_and_newlines_from_children_are_shown_escaped() -> None:
    """A child's line (or a value it quotes from a client, an impostor's node id) must not
    clear the operator's screen, retitle the terminal or forge a second log line."""
    f = fmt(fields=True)
    hostile = "\x1b[2J\x1b]0;owned\x07\nFAKE"
    record = {"level": "warn\x1b[5m", "message": hostile, "node_id": hostile, "tail": [hostile]}
    out = f.format("control-plane", "log", line(record))
    access = f.format("access", "access", line({**ACCESS, "path": hostile, "details": hostile}))
    raw = f.format("envoy", "log", b"raw \x1b[2J\x07 line")
    for text in (out, access, raw):
        assert b"\x1b" not in text and b"\x07" not in text, text
    assert out.count(b"\n") == 2 and b"\nFAKE" not in out  # one line, plus the tail's line
    assert access.count(b"\n") == 1 and raw.count(b"\n") == 1
    assert b"\\x1b[2J\\x1b]0;owned\\x07\\nFAKE" in access


def test_a_deeply_nested_json_line_is_shown_as_text() -> None:
    """json.loads recurses once per level: a line of 100,000 '[' raised RecursionError,
    which killed the relay thread of ``meshgate up``."""
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = fmt().format("x", "log", deep)
    assert out.startswith(b'08:00:00 x             {"a":[[[') and out.endswith(b"}\n")
