"""The options of ``meshgate up`` and how its output format is chosen."""

from __future__ import annotations

import argparse

import pytest

from meshgate.cli.main import build_parser
from meshgate.cli.up import output_modes
from meshgate.cli.up_options import UpOptions, up_options


def up_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["up"]
    return parser


def test_every_up_flag_has_help_that_shows_its_default() -> None:
    parser = up_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {a.option_strings[0] for a in flags} >= {
        "--config",
        "--envoy",
        "--xds-port",
        "--admin-port",
        "--envoy-admin-port",
        "--validator",
        "--delta",
        "--log-format",
    }
    text = parser.format_help()
    for action in flags:
        assert action.help and "(default: " in action.help, action.option_strings
        if action.default not in (None, False):
            assert f"(default: {action.default})" in text, action.option_strings


def test_flags_become_options() -> None:
    a = up_parser().parse_args(["--xds-port", "1", "--delta", "--log-format", "json"])
    assert up_options(a) == UpOptions(xds_port=1, api_type="DELTA_GRPC", log_format="json")
    assert up_options(up_parser().parse_args([])) == UpOptions()


@pytest.mark.parametrize(
    ("fmt", "stdout_tty", "stderr_tty", "expected"),
    [
        ("auto", True, True, (True, True)),
        ("auto", False, True, (False, True)),  # meshgate up > access.log: JSON in the file
        ("auto", False, False, (False, False)),
        ("text", False, False, (True, True)),
        ("json", True, True, (False, False)),
    ],
)
def test_output_modes(
    fmt: str, stdout_tty: bool, stderr_tty: bool, expected: tuple[bool, bool]
) -> None:
    assert output_modes(fmt, stdout_tty, stderr_tty) == expected
