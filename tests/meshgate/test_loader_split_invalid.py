"""Every kind of mistake in a config split across files has a fixture and its exact text.

``tests/fixtures/invalid_split/<kind>/`` holds the files (the first line of the first file
says what is wrong). The config path is ``<kind>/gateway.yaml`` when there is one (its
``include`` brings in the rest), else the directory itself. ``<kind>.expected`` is the full
error output, one ``str(problem)`` per line, with the fixture's directory written ``{dir}``
(in file names and in messages that point at a second place). Comparing whole lines pins the
file, line:column, path and wording of every problem at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from meshgate.loader import ConfigError, load_config
from meshgate.problems import Problem
from tests.paths import TESTS

FIXTURES = TESTS / "fixtures" / "invalid_split"
KINDS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def config_path(kind: str) -> Path:
    case = FIXTURES / kind
    root = case / "gateway.yaml"
    return root if root.exists() else case


def shown(problem: Problem, case: Path) -> str:
    def local(text: str) -> str:
        return text.replace(str(case), "{dir}")

    found = dataclasses.replace(problem, file=local(problem.file), message=local(problem.message))
    return str(found)


def test_every_fixture_has_expected_text() -> None:
    expected = {p.stem for p in FIXTURES.glob("*.expected")}
    assert set(KINDS) == expected
    assert len(KINDS) >= 10


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_split_config_reports_exact_problems(kind: str) -> None:
    case = FIXTURES / kind
    with pytest.raises(ConfigError) as info:
        load_config(config_path(kind))
    problems = info.value.report()
    assert problems, "a ConfigError must carry at least one problem"
    assert all(p.file.startswith(str(case)) for p in problems), "every problem names its file"
    actual = "".join(f"{shown(p, case)}\n" for p in problems)
    assert actual == (FIXTURES / f"{kind}.expected").read_text(encoding="utf-8")


def test_documented_split_error_messages_are_real() -> None:
    """Each sample line of docs/configuration.md that starts with ``conf.d`` is the exact
    output of some fixture here, its directory written ``conf.d``."""
    markdown = (TESTS.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    samples = [
        line.replace("conf.d", "{dir}")
        for line in markdown.splitlines()
        if line.startswith(("conf.d/", "conf.d:"))
    ]
    assert len(samples) >= 5
    real = {
        line
        for path in FIXTURES.glob("*.expected")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert [s for s in samples if s not in real] == []
