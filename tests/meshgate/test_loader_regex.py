"""Every regex in the config is compiled by RE2 (the ``google-re2`` wheel), as Envoy will.

``meshgate validate`` without Envoy refuses what Envoy's RE2 refuses (``a{1001}``, lookaround)
and what Envoy's default program-size limit refuses (``re2.max_program_size.error_level`` =
100), at file:line:col. The integration test at the end asks the real Envoy about the same
patterns, so the limit we apply is the limit Envoy applies.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from meshgate.config.regex import ENVOY_MAX_PROGRAM_SIZE, capture_groups, check_regex, compile_re2
from meshgate.loader import ConfigError, parse_config
from tests.paths import ROOT
from xds_server.compiler import compile_snapshot
from xds_server.publish.validation import ValidateModeValidator

#: Where a regex can be written, as (yaml snippet under the virtual host, path of the regex).
PLACES = {
    "route": (
        '        routes:\n          - match: {{regex: "{p}"}}\n            service: web\n',
        "routes[0].match.regex",
    ),
    "header match": (
        "        routes:\n          - match:\n              prefix: /\n"
        '              headers: [{{name: x-user, regex: "{p}"}}]\n            service: web\n',
        "routes[0].match.headers[0].regex",
    ),
    "cors origin": (
        '        cors: {{allow_origin_regex: ["{p}"]}}\n'
        "        routes:\n          - {{match: {{prefix: /}}, service: web}}\n",
        "cors.allow_origin_regex[0]",
    ),
    "rewrite": (
        "        routes:\n          - match: {{prefix: /}}\n            service: web\n"
        '            rewrite: {{regex: {{pattern: "{p}", substitution: /x}}}}\n',
        "routes[0].rewrite.regex.pattern",
    ),
}


def config(place: str, pattern: str) -> str:
    snippet, _ = PLACES[place]
    return (
        "listeners:\n  - name: public\n    port: 8080\n    virtual_hosts:\n"
        "      - name: default\n"
        + snippet.format(p=pattern.replace("\\", "\\\\"))
        + "services:\n  - name: web\n    endpoints: [{address: 127.0.0.1, port: 9000}]\n"
    )


@pytest.mark.parametrize("place", sorted(PLACES))
def test_every_regex_field_is_checked_by_re2(place: str) -> None:
    parse_config(config(place, "^/a{96}$"), "g.yaml")  # program size 100: accepted
    for pattern, reason in (
        ("^/a{97}$", "its RE2 program size is 101, more than Envoy's limit of 100"),
        ("^/a{1001}$", "invalid repetition '{1001}': RE2 (used by Envoy) repeats at most 1000"),
        ("^/(?<=a)b$", "RE2 (used by Envoy) has no lookbehind"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(config(place, pattern), "g.yaml")
        [problem] = info.value.problems
        assert problem.path.endswith(PLACES[place][1])
        assert problem.line is not None and problem.column is not None
        assert reason in problem.message


def test_validate_without_envoy_refuses_a_1001_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config("route", "^/a{1001}$"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {path}:7:21: listeners[0].virtual_hosts[0].routes[0].match.regex: invalid "
        "regex '^/a{1001}$': invalid repetition '{1001}': RE2 (used by Envoy) repeats at most "
        "1000 times, nested repetitions multiplied\n"
    )
    assert "re2.cc" not in result.stderr  # RE2's own logging is off


@pytest.mark.parametrize(
    "pattern",
    [
        "[[:alpha:]]+",  # POSIX class: RE2 has it, Python's re does not
        r"^/\z",  # \z: RE2's end of text
        r"^/(?P<id>[0-9]+)$",
        r"^/(?<id>[0-9]+)$",  # RE2's newer named-group spelling
        "(?i)^/api",
        "(?U)a+",  # RE2's ungreedy flag
    ],
)
def test_patterns_re2_accepts_are_accepted(pattern: str) -> None:
    assert check_regex(pattern) == pattern


def test_long_pattern_is_shortened_in_the_message() -> None:
    pattern = "^/" + "a" * 200 + "("
    with pytest.raises(ValueError) as info:
        check_regex(pattern)
    assert str(info.value) == (
        "invalid regex '^/aaaaaaaaaaaaaaaaaaaaaa…' (203 chars): missing ), the '(' at position "
        "202 is never closed (RE2, used by Envoy)"
    )


def test_capture_groups_are_counted_by_re2() -> None:
    assert capture_groups(r"^/(a)(?:b)(?P<c>c)$") == 2
    assert compile_re2("^/x$")._regexp.ProgramSize() <= ENVOY_MAX_PROGRAM_SIZE


@pytest.mark.integration
@pytest.mark.parametrize(("repeat", "accepted"), [(96, True), (97, False)])
def test_envoy_draws_the_program_size_line_where_we_do(repeat: int, accepted: bool) -> None:
    """The real Envoy (``--mode validate``) judges ``^/a{96}$`` (program size 100) and
    ``^/a{97}$`` (101): it must accept and refuse exactly what our check does. The pattern is
    set past our validator, so that Envoy, not the loader, judges it."""
    pattern = f"^/a{{{repeat}}}$"
    assert (ENVOY_MAX_PROGRAM_SIZE >= compile_re2(pattern)._regexp.ProgramSize()) is accepted
    loaded = parse_config(config("route", "^/placeholder$"), "g.yaml")
    match = loaded.config.listeners[0].virtual_hosts[0].routes[0].match
    object.__setattr__(match, "regex", pattern)  # a frozen model: set past the validator
    snapshot = compile_snapshot(loaded.config)
    objections = asyncio.run(ValidateModeValidator(None).validate(snapshot))
    if accepted:
        assert objections == []
    else:
        [objection] = objections
        assert "RE2 program size of 101 > max program size of 100" in objection
