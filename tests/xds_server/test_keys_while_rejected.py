"""The control plane in-process (real compile workers, no Envoy): signing keys that change while
the config is rejected go into the published snapshot, and neither that path nor a compile
can publish older keys over newer ones. Through Envoy: tests/integration/test_jwks_envoy.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.support.staff_gateway import staff_config
from tests.support.tokens import SigningKey, jwks_of
from xds_server.app import ControlPlane, Settings
from xds_server.compiler.context import IssuerKeys
from xds_server.sources.base import KeysChanged
from xds_server.sources.state import CompileInput
from xds_server.worker.job import Compiled, CompileJob, Rejected, run_job, to_snapshot

K1, K2 = SigningKey.ec("k1"), SigningKey.ec("k2")
URL = "https://idp.example/jwks"

CONFIG = staff_config({"url": URL})


def keys(*signing: SigningKey) -> dict[str, IssuerKeys]:
    return {"corp": IssuerKeys(f"url:{URL}", json.dumps(jwks_of(*signing)))}


def compiled_version(path: Path, fetched: dict[str, IssuerKeys]) -> str:
    outcome = run_job(CompileJob(str(path), jwks=fetched))
    assert isinstance(outcome, Compiled), outcome
    return to_snapshot(outcome).version


async def test_keys_reach_the_published_snapshot_while_rejected_and_never_go_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    with_k2 = compiled_version(path, keys(K1, K2))
    plane = ControlPlane(Settings(str(path), validator="none"))

    try:

        async def new_keys(fetched: dict[str, IssuerKeys]) -> None:
            plane._on_event(KeysChanged("jwks", fetched))  # as the JWKS manager reports them
            await plane.compiler.run_pending()

        await plane.check_config()
        await new_keys(keys(K1))
        assert plane.publisher.state.version == compiled_version(path, keys(K1))
        good_digest = plane.publisher.state.config_digest

        path.write_text("listeners: [\n")  # a broken edit
        await plane.check_config()
        assert plane.status()["config"]["errors"]
        await new_keys(keys(K1, K2))
        # the published snapshot is what compiling the last good config with K1+K2 gives
        assert plane.publisher.state.version == with_k2
        assert plane.status()["jwks"]["pending"] is False
        assert plane.status()["config"]["errors"]  # the rejection stands
        assert plane.publisher.state.config_digest == good_digest

        # an outcome of an older input (older keys) arriving late changes nothing
        stale = plane.state.current()
        assert stale is not None
        older = CompileInput(stale.generation - 1, stale.config, jwks=keys(K1))
        await plane._on_outcome(older, Rejected("x", ()))
        assert plane.publisher.state.version == with_k2

        # the keys dropped (past max_stale) while still rejected: the key no token matches
        await new_keys({})
        path.write_text(yaml.safe_dump(CONFIG))
        no_keys = compiled_version(path, {})
        path.write_text("listeners: [\n")
        assert plane.publisher.state.version == no_keys

        # the fix compiles the newest keys into the same snapshot: nothing older comes back
        path.write_text(yaml.safe_dump(CONFIG))
        await plane.check_config()
        assert plane.status()["config"]["errors"] == []
        assert plane.publisher.state.version == no_keys
    finally:
        await plane.compiler.stop()  # no worker or fork server outlives the test
