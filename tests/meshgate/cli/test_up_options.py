"""The options of ``meshgate up`` and how its output format is chosen."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from meshgate.cli.main import build_parser
from meshgate.cli.services import needed_services
from meshgate.cli.up import output_modes, run_up
from meshgate.cli.up_options import UpOptions, up_options
from meshgate.loader import load_config
from tests.paths import ROOT


def up_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["up"]
    return parser


def test_log_format_is_an_up_flag_with_its_default_shown() -> None:
    # every flag's help and default: tests/meshgate/cli/test_cli.py; this one came with supervision
    text = " ".join(up_parser().format_help().split())
    assert "--log-format {auto,text,json}" in text
    assert "else json (default: auto)" in text


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


def test_config_limits_reach_the_control_plane_and_the_first_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``meshgate up --max-config-bytes/--max-config-nodes``: the control plane it starts gets
    the same limits, and ``up``'s own first look at the file applies them too."""
    a = up_parser().parse_args(["--max-config-bytes", "123", "--max-config-nodes", "45"])
    opts = up_options(a)
    assert (opts.max_config_bytes, opts.max_config_nodes) == (123, 45)
    config = load_config(ROOT / "examples" / "quickstart.yaml").config
    [plane] = needed_services(opts, "gw.yaml", config, [])
    argv = plane.argv()
    assert argv[argv.index("--max-config-bytes") + 1] == "123"
    assert argv[argv.index("--max-config-nodes") + 1] == "45"
    big = tmp_path / "gw.yaml"
    big.write_text((ROOT / "examples" / "quickstart.yaml").read_text())
    assert run_up(UpOptions(config=str(big), max_config_bytes=100)) == 1
    assert "more than the limit of 100 bytes" in capsys.readouterr().err


def test_max_config_files_reaches_the_control_plane_and_the_first_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``meshgate up --config DIR``: the directory is checked first with ``up``'s limits, and
    the control plane it starts gets the same ``--max-config-files``."""
    opts = up_options(up_parser().parse_args(["--max-config-files", "7"]))
    assert opts.max_config_files == 7
    config = load_config(ROOT / "examples" / "quickstart.yaml").config
    [plane] = needed_services(opts, "conf.d", config, [])
    argv = plane.argv()
    assert argv[argv.index("--max-config-files") + 1] == "7"
    conf = tmp_path / "conf.d"
    conf.mkdir()
    for name in ("a.yaml", "b.yaml"):
        (conf / name).write_text((ROOT / "examples" / "quickstart.yaml").read_text())
    assert run_up(UpOptions(config=str(conf), max_config_files=1)) == 1
    assert capsys.readouterr().err == (
        f"error: {conf}: the config is made of more than 1 files (raise the limit with "
        "--max-config-files)\n"
    )
