"""Every kind of config mistake has a fixture and the exact text an operator will read.

``tests/fixtures/invalid/<kind>.yaml`` holds the mistake (its first line says what it is) and
``<kind>.expected`` the full error output, one ``str(problem)`` per line, with the file path
replaced by ``{file}`` (and, where the list was cut, ``{file}: ... and N more problems``).
Comparing whole lines pins the location (line:column), the path and the wording together, so a
regression in any of them fails here.
"""

from __future__ import annotations

import dataclasses

import pytest

from meshgate.config import check_regex
from meshgate.loader import ConfigError, load_config, parse_config
from tests.paths import TESTS

FIXTURES = TESTS / "fixtures" / "invalid"
KINDS = sorted(p.stem for p in FIXTURES.glob("*.yaml"))


def test_every_fixture_has_expected_text() -> None:
    expected = {p.stem for p in FIXTURES.glob("*.expected")}
    assert set(KINDS) == expected
    assert len(KINDS) >= 28


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_config_reports_exact_problems(kind: str) -> None:
    path = FIXTURES / f"{kind}.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.report()
    assert problems, "a ConfigError must carry at least one problem"
    assert all(p.file == str(path) for p in problems)
    actual = "".join(f"{dataclasses.replace(p, file='{file}')}\n" for p in problems)
    assert actual == (FIXTURES / f"{kind}.expected").read_text(encoding="utf-8")


def test_error_message_is_every_problem_line() -> None:
    """``str(ConfigError)`` is what logs show: one problem per line, in order."""
    with pytest.raises(ConfigError) as info:
        load_config(FIXTURES / "unknown_http_method.yaml")
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert len(info.value.problems) == 2


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(FIXTURES / "does-not-exist.yaml")
    assert [p.message for p in info.value.problems] == ["file not found"]


@pytest.mark.parametrize(
    "pattern",
    [
        r"^/a\\1$",  # an escaped backslash followed by '1', not a backreference
        r"^/[(?=]$",  # '(', '?', '=' inside a character class
        r"^/[]a(?!]x$",  # a leading ']' is a class member; the class still hides '(?!'
        r"^/(?P<id>[0-9]+)/a{2,}?$",  # named group, lazy quantifier
        r"^/a}+$",  # a literal '}' repeated, not a possessive quantifier
        r"^/(?i:abc)$",  # flags group
    ],
)
def test_re2_compatible_patterns_are_accepted(pattern: str) -> None:
    """The RE2 check must not reject valid patterns that merely look like lookaround etc."""
    assert check_regex(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        ("^/(?<=a)b", "lookbehind"),
        ("^/(?<!a)b", "negative lookbehind"),
        ("^/a(?=b)", "lookahead"),
        ("^/(?P<x>a)(?P=x)$", "backreferences"),
        ("^/(a)?(?(1)b|c)$", "conditional groups"),
        ("^/a*+$", "possessive quantifiers"),
        ("^/a{2}+$", "possessive quantifiers"),
        (r"^/a\Z", r"\Z (use \z or $)"),
    ],
)
def test_re2_unsupported_constructs_are_named(pattern: str, what: str) -> None:
    with pytest.raises(ValueError, match="RE2") as info:
        check_regex(pattern)
    assert str(info.value) == f"invalid regex '{pattern}': RE2 (used by Envoy) has no {what}"


def test_valid_fixture_variant_is_accepted() -> None:
    """Guard against fixtures failing for an unintended reason: fixing the one mistake passes."""
    text = (FIXTURES / "unknown_field.yaml").read_text(encoding="utf-8")
    loaded = parse_config(text.replace("servce:", "service:"), "fixed.yaml")
    assert loaded.config.listeners[0].virtual_hosts[0].routes[0].service == "web"
