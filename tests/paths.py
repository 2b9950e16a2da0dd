"""Where things are, for tests at any depth of the tree (tests mirror the packages)."""

from __future__ import annotations

from pathlib import Path

#: The tests/ folder and the repository root.
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
