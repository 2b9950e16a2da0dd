"""Every config in examples/ is runnable: it loads, compiles, and Envoy itself accepts it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshgate.loader import load_config
from tests.paths import ROOT
from xds_server.compiler import compile_snapshot
from xds_server.publish.validation import ValidateModeValidator

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"quickstart.yaml", "traffic.yaml"}


@pytest.mark.integration
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_envoy(path: Path) -> None:
    snapshot = compile_snapshot(load_config(path).config)
    assert asyncio.run(ValidateModeValidator().validate(snapshot)) == []
