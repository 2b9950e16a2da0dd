"""The loader's fast path builds the same data PyYAML's constructor does, only faster."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from meshgate.loader import ConfigError, parse_config
from meshgate.yaml_read import _FastLoader, fast_load

DOCUMENTS = [
    "a: 1\nb: [x, 2.5, true, null, ~, 0x1f, '3']\nc: {d: e}\n",
    "base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: *b\n",  # aliases, shared as PyYAML shares them
    "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n",  # merge key: PyYAML's constructor
    "1: one\n2.5: two\nnull: three\n",  # keys that are not strings
    "when: 2024-01-02\ntags: !!set {a, b}\nbin: !!binary aGVsbG8=\n",
    "- a\n- [b, [c, [d]]]\n- {e: {f: g}}\n",
    "just a string\n",
    "",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_same_data_as_pyyaml(text: str) -> None:
    assert fast_load(text) == yaml.load(text, Loader=_FastLoader)


def test_aliases_stay_shared() -> None:
    data = fast_load("base: &b {x: [1]}\none: *b\ntwo: *b\n")
    assert data["one"] is data["two"] is data["base"]


def test_a_recursive_alias_is_left_to_pyyaml() -> None:
    data: Any = fast_load("a: &a [1, *a]\n")
    assert data["a"][1] is data["a"]


def test_duplicate_keys_are_still_reported_with_their_lines() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("listeners: []\nservices: []\nlisteners: []\n", "g.yaml")
    assert "g.yaml:3:1: listeners: duplicate key" in str(exc.value)


def test_a_value_python_cannot_build_is_a_located_yaml_error() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("listeners: []\nextra: 2024-13-01\n", "g.yaml")
    assert "g.yaml:2:8:" in str(exc.value) and "month must be in 1..12" in str(exc.value)
