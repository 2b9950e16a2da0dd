"""Suite-wide test configuration.

Everything under ``tests/integration/`` starts real Envoy (or other real servers), so it is
marked ``integration`` here once instead of in every module; ``pytest -m "not integration"``
then runs the pure cores in seconds. Tests elsewhere that start Envoy carry the mark
themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
