"""Suite-wide test configuration.

Everything under ``tests/integration/`` starts real Envoy (or other real servers), so it is
marked ``integration`` here once instead of in every module; ``pytest -m "not integration"``
then runs the pure cores in seconds. Tests elsewhere that start Envoy carry the mark
themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True, scope="session")
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Control planes started by tests keep their state (the JWKS cache under
    ``$XDG_STATE_HOME/meshgate``) in this test run's directory, never in the user's
    ``~/.local/state``, and no test sees keys another run left behind."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before
