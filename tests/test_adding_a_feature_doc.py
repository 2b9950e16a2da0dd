"""docs/adding-a-feature.md shows real code: every excerpt is in the file it names, and the
error lines it shows are the ones the code produces."""

from __future__ import annotations

import re

import pytest

from tests.paths import ROOT
from tests.xds_server.compiler.test_feature_seam import (
    _config,
    _ExtAuthzWithoutCluster,
    compile_snapshot_with,
)
from xds_server.snapshot.snapshot import InconsistentSnapshotError

GUIDE = ROOT / "docs" / "adding-a-feature.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SOURCE = re.compile(r"# ([\w./-]+\.(?:py|yaml))\n")


def _blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))]


EXCERPTS = [
    (source.group(1), body[source.end() :])
    for language, body in _blocks()
    if language in ("python", "yaml") and (source := _SOURCE.match(body))
]


def test_the_guide_has_excerpts() -> None:
    assert len(EXCERPTS) >= 8
    assert all(lang in ("python", "yaml", "") for lang, _ in _blocks())


@pytest.mark.parametrize(("path", "excerpt"), EXCERPTS, ids=[p for p, _ in EXCERPTS])
def test_excerpt_is_in_its_file(path: str, excerpt: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert excerpt in text, f"the guide's excerpt of {path} no longer matches the file"


def test_error_lines_are_real(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = [body.strip() for lang, body in _blocks() if lang == "" and "\n" not in body.strip()]
    fixture_line = next(line for line in plain if line.startswith("{file}"))
    expected = ROOT / "tests/fixtures/invalid/protection_cors_credentials_wildcard.expected"
    assert fixture_line in expected.read_text(encoding="utf-8").splitlines()

    from xds_server.compiler import filters

    row = filters.Slot("envoy.filters.http.ext_authz", "after CORS")
    monkeypatch.setattr(filters, "HTTP_FILTER_ORDER", (row, *filters.HTTP_FILTER_ORDER))
    with pytest.raises(InconsistentSnapshotError) as info:
        compile_snapshot_with(_config(), _ExtAuthzWithoutCluster())
    assert str(info.value) in plain
