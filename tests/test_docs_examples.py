"""The examples in docs/configuration.md are real configs: each one must load.

Only fenced ``yaml`` blocks whose first line is ``# example`` are checked, so the reference
can still show fragments (a single field, an error) without making them whole configs.
"""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from meshgate.config import GatewayConfig
from meshgate.loader import ConfigError, parse_config
from tests.paths import ROOT, TESTS

DOC = ROOT / "docs" / "configuration.md"
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples(markdown: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, block text) for every ``# example`` yaml block."""
    found = []
    for m in _BLOCK.finditer(markdown):
        body = m.group(1)
        if re.match(r"# example\b", body):
            found.append((markdown.count("\n", 0, m.start()) + 1, body))
    return found


EXAMPLES = examples(DOC.read_text(encoding="utf-8"))


def test_the_doc_has_examples() -> None:
    # Guards the extraction itself: a changed fence style must not silently check nothing.
    assert len(EXAMPLES) >= 6


def test_extraction_only_takes_marked_yaml_blocks() -> None:
    text = "```yaml\n# example: a\nx: 1\n```\n```yaml\nfragment: 1\n```\n```\n# example\n```\n"
    assert examples(text) == [(1, "# example: a\nx: 1\n")]


@pytest.mark.parametrize(("line", "text"), EXAMPLES, ids=[f"line{n}" for n, _ in EXAMPLES])
def test_doc_example_is_valid(line: int, text: str) -> None:
    source = f"{DOC.name}:{line}"
    try:
        parse_config(text, source)
    except ConfigError as exc:
        pytest.fail(f"the example at {source} does not load:\n{exc}")


def test_documented_error_messages_are_real() -> None:
    """Each sample error line in the doc is the exact output of some invalid fixture."""
    markdown = DOC.read_text(encoding="utf-8")
    samples = [
        line.replace("gateway.yaml", "{file}", 1)
        for line in markdown.splitlines()
        if line.startswith("gateway.yaml")
    ]
    assert len(samples) >= 10
    fixtures = TESTS / "fixtures" / "invalid"
    real = {
        line
        for path in fixtures.glob("*.expected")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert [s for s in samples if s not in real] == []


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model reachable from ``root`` through its fields' annotations."""
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += [t for t in _types_in(field.annotation) if issubclass(t, BaseModel)]
    return seen


def _types_in(annotation: Any) -> list[type]:
    if isinstance(annotation, type) and not get_args(annotation):
        return [annotation]
    return [t for arg in get_args(annotation) for t in _types_in(arg)]


def test_every_config_field_is_documented() -> None:
    """A field added to the model without a row in the reference fails here."""
    markdown = DOC.read_text(encoding="utf-8")
    missing = [
        f"{model.__name__}.{name}"
        for model in _models(GatewayConfig)
        for name in model.model_fields
        if f"| `{name}` |" not in markdown
    ]
    assert missing == []
