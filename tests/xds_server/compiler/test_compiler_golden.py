"""Golden tests for the pure compiler: each config in ``tests/golden`` against its rendered JSON.

The JSON is exactly what ``meshgate render`` prints, versions included, so a change to any
compiled field, to resource order or to the version hashing shows up here as a reviewable diff.
After an intended change, regenerate and review with::

    MESHGATE_UPDATE_GOLDEN=1 pytest tests/xds_server/compiler/test_compiler_golden.py
    git diff tests/golden
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from meshgate.loader import load_config, parse_config
from tests.paths import ROOT, TESTS
from tests.support.compile_inputs import placeholder_secrets
from xds_server.compiler import compile_snapshot
from xds_server.compiler.render import snapshot_to_dict
from xds_server.snapshot.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE

GOLDEN_DIR = TESTS / "golden"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
UPDATE = os.environ.get("MESHGATE_UPDATE_GOLDEN") == "1"


def _cases() -> dict[str, Path]:
    cases = {p.stem: p for p in sorted(GOLDEN_DIR.glob("*.yaml"))}
    # The quickstart is compiled from the example itself, not a copy, so the golden follows
    # the file users actually run.
    cases["quickstart"] = QUICKSTART
    return cases


CASES = _cases()


def _render(path: Path) -> dict[str, Any]:
    config = load_config(path).config
    return snapshot_to_dict(compile_snapshot(config, secrets=placeholder_secrets(config)))


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    actual = _render(CASES[case])
    golden = GOLDEN_DIR / f"{case}.json"
    if UPDATE:
        golden.write_text(_dump(actual), encoding="utf-8")
        return
    if not golden.exists():
        pytest.fail(
            f"{golden} is missing; create it with MESHGATE_UPDATE_GOLDEN=1 pytest {__file__}"
        )
    expected = json.loads(golden.read_text(encoding="utf-8"))
    assert actual == expected, (
        f"compiled output of {case} differs from {golden.name}; if the change is intended, "
        "regenerate with MESHGATE_UPDATE_GOLDEN=1 and review the diff"
    )


def test_every_golden_json_has_a_case() -> None:
    """A leftover JSON (its YAML renamed or deleted) would otherwise rot unnoticed."""
    orphans = sorted(p.name for p in GOLDEN_DIR.glob("*.json") if p.stem not in CASES)
    assert orphans == []


def _snapshot(text: str) -> Any:
    return compile_snapshot(parse_config(text).config)


def test_compiling_twice_gives_identical_versions() -> None:
    """Replicas must compute the same versions from the same input, or Envoys re-fetch."""
    text = QUICKSTART.read_text(encoding="utf-8")
    first, second = _snapshot(text), _snapshot(text)
    assert first.version == second.version
    assert dict(first.versions) == dict(second.versions)
    assert snapshot_to_dict(first) == snapshot_to_dict(second)


def test_changing_one_route_changes_rds_only() -> None:
    text = QUICKSTART.read_text(encoding="utf-8")
    assert text.count("timeout: 5s") == 1
    before = _snapshot(text)
    after = _snapshot(text.replace("timeout: 5s", "timeout: 6s"))

    assert after.version != before.version
    assert after.type_version(ROUTE) != before.type_version(ROUTE)
    # Nothing else changed, so Envoy must not be sent new clusters, endpoints or listeners.
    for unchanged in (CLUSTER, ENDPOINT, LISTENER):
        assert after.type_version(unchanged) == before.type_version(unchanged)
    routes_before, routes_after = before.of_type(ROUTE), after.of_type(ROUTE)
    assert routes_after["public"].version != routes_before["public"].version


def test_changing_one_endpoint_changes_eds_only() -> None:
    text = QUICKSTART.read_text(encoding="utf-8")
    assert text.count("port: 9102}") == 2  # the echo-b endpoint and its demo upstream
    before = _snapshot(text)
    after = _snapshot(
        text.replace("{address: 127.0.0.1, port: 9102}", "{address: 127.0.0.1, port: 9103}")
    )

    assert after.type_version(ENDPOINT) != before.type_version(ENDPOINT)
    for unchanged in (CLUSTER, LISTENER, ROUTE):
        assert after.type_version(unchanged) == before.type_version(unchanged)
    # Only the one service's load assignment has a new version.
    eds_before, eds_after = before.of_type(ENDPOINT), after.of_type(ENDPOINT)
    assert eds_after["echo-a"].version == eds_before["echo-a"].version
    assert eds_after["echo-b"].version != eds_before["echo-b"].version


def test_method_order_does_not_change_the_version() -> None:
    """Methods are a set: writing them in another order must not trigger a push to Envoy."""
    text = (GOLDEN_DIR / "methods_multiple.yaml").read_text(encoding="utf-8")
    reordered = text.replace("[PUT, POST, PATCH, POST]", "[PATCH, POST, PUT]")
    assert reordered != text
    assert _snapshot(reordered).version == _snapshot(text).version
