"""``meshgate validate`` and ``meshgate render`` as an operator runs them: a real subprocess.

Going through ``python -m meshgate.cli`` (not ``main()`` in-process) also checks the exit codes
and that errors go to stderr and results to stdout, which shell scripts and CI rely on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
INVALID = Path(__file__).parent / "fixtures" / "invalid"


def meshgate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_validate_good_file() -> None:
    result = meshgate("validate", QUICKSTART)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{QUICKSTART}: ok (1 listener(s), 5 route(s), 2 service(s);")


@pytest.mark.parametrize("kind", ["unknown_service", "unknown_http_method", "yaml_syntax"])
def test_validate_bad_file(kind: str) -> None:
    path = INVALID / f"{kind}.yaml"
    result = meshgate("validate", path)
    assert result.returncode == 1
    assert result.stdout == ""
    expected = (INVALID / f"{kind}.expected").read_text(encoding="utf-8")
    assert result.stderr == "".join(
        f"error: {line.replace('{file}', str(path))}\n" for line in expected.splitlines()
    )


def test_validate_reports_the_exact_message(tmp_path: Path) -> None:
    """Written out in full once, so a reader sees what an operator sees."""
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        "listeners:\n"
        "  - name: public\n"
        "    port: 8080\n"
        "    virtual_hosts:\n"
        "      - name: default\n"
        "        routes:\n"
        "          - {match: {prefix: /}, service: web}\n",
        encoding="utf-8",
    )
    result = meshgate("validate", bad)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {bad}:7:34: listeners[0].virtual_hosts[0].routes[0].service: "
        "unknown service 'web' (defined services: none)\n"
    )


def test_validate_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = meshgate("validate", missing)
    assert result.returncode == 1
    assert result.stderr == f"error: {missing}: file not found\n"


def test_render_prints_the_snapshot_as_json() -> None:
    result = meshgate("render", QUICKSTART)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert set(rendered) == {"version", "resources", "versions"}
    assert set(rendered["resources"]) == {"CDS", "EDS", "LDS", "RDS"}
    assert set(rendered["versions"]) == {"CDS", "EDS", "LDS", "RDS"}
    assert [c["name"] for c in rendered["resources"]["CDS"]] == ["echo-a", "echo-b"]
    assert [lst["name"] for lst in rendered["resources"]["LDS"]] == ["public"]
    # The same document the golden test pins: render is the golden file's producer.
    golden = json.loads((Path(__file__).parent / "golden" / "quickstart.json").read_text())
    assert rendered == golden


def test_render_bad_file_fails_like_validate() -> None:
    path = INVALID / "duplicate_key.yaml"
    result = meshgate("render", path)
    assert result.returncode == 1
    assert result.stdout == ""
    expected = (INVALID / "duplicate_key.expected").read_text(encoding="utf-8")
    assert result.stderr == f"error: {expected.replace('{file}', str(path))}"


def test_status_is_unhealthy_on_rejected_config_or_a_fleet_refusal() -> None:
    from meshgate.cli.main import unhealthy

    in_sync = {"state": "in_sync", "types": {"LDS": {"state": "in_sync"}}}
    refused = {"state": "refused", "types": {"LDS": {"state": "refused"}}}
    # an Envoy that once refused, then ran the published snapshot again, is in sync
    assert not unhealthy({"config": {"errors": []}, "envoys": [in_sync]})
    assert unhealthy({"config": {"errors": [{"message": "x"}]}, "envoys": []})
    assert unhealthy({"config": {"errors": []}, "envoys": [in_sync, refused]})
    assert not unhealthy({"config": {"errors": []}, "envoys": [{"state": "updating"}]})
