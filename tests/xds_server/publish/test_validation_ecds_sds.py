"""Both validators judge filter configs (ECDS) and secrets (SDS), through real Envoy.

The canary gets them over its private ADS like the fleet does, and accepts a candidate only
once it has ACKed them too; validate mode inlines the filter configs into the HTTP filters and
the secrets into ``static_resources.secrets``. A filter config Envoy refuses is refused by
both, with Envoy's reason and without the secret's value.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2

from meshgate.proxy.envoy_process import free_port
from tests.xds_server.server.test_ads_ecds_sds import (
    FIRST_SECRET,
    HEADERS_FILTER,
    SECOND_SECRET,
    SECRET_NAME,
    headers_config,
    snapshot,
)
from xds_server.compiler.extension_configs import extension_config_resource
from xds_server.publish.static_bootstrap import static_bootstrap
from xds_server.publish.validation import CanaryValidator, ValidateModeValidator
from xds_server.server.ads import AdsServicer, add_to_server
from xds_server.server.status import StatusRegistry
from xds_server.snapshot.cache import CANARY_GROUP, SnapshotCache
from xds_server.snapshot.snapshot import EXTENSION_CONFIG, Snapshot

pytestmark = [pytest.mark.integration]

UPSTREAM = 9  # never called: validation only


def good(secret: str = FIRST_SECRET) -> Snapshot:
    return snapshot(free_port(), UPSTREAM, "v1", secret)


def with_bad_filter_config(snap: Snapshot) -> Snapshot:
    """``snap`` with a header_mutation config Envoy refuses (an empty header name)."""
    bad = headers_config("v1")
    bad.mutations.response_mutations[0].append.header.key = ""
    kept = [r for t in snap.types for r in snap.of_type(t).values() if t != EXTENSION_CONFIG]
    configs = [
        extension_config_resource(HEADERS_FILTER, bad) if n == HEADERS_FILTER else r
        for n, r in snap.of_type(EXTENSION_CONFIG).items()
    ]
    return Snapshot.build(kept + configs).check()


def test_validate_mode_bootstrap_inlines_filter_configs_and_static_secrets() -> None:
    boot = static_bootstrap(good())
    text = json.dumps(boot)
    assert "config_discovery" not in text and "sds_config" not in text
    static = boot["static_resources"]
    assert isinstance(static, dict)
    assert [s["name"] for s in static["secrets"]] == [SECRET_NAME]
    assert "type.googleapis.com/envoy.extensions.filters.http.header_mutation" in text


async def test_validate_mode_judges_filter_configs_and_secrets() -> None:
    validator = ValidateModeValidator()
    assert await validator.validate(good()) == []
    [objection] = await validator.validate(with_bad_filter_config(good()))
    assert "HeaderValueValidationError.Key" in objection, objection
    assert FIRST_SECRET not in objection


def test_validate_mode_refuses_a_filter_config_of_another_type() -> None:
    snap = good()
    kept = [r for t in snap.types for r in snap.of_type(t).values() if t != EXTENSION_CONFIG]
    other = extension_config_resource(HEADERS_FILTER, base_pb2.HeaderValue(key="x"))
    rest = [r for n, r in snap.of_type(EXTENSION_CONFIG).items() if n != HEADERS_FILTER]
    mixed = Snapshot.build([*kept, other, *rest]).check()
    with pytest.raises(ValueError, match="not one of"):
        static_bootstrap(mixed)


@pytest.fixture
async def canary(tmp_path: Path) -> AsyncIterator[CanaryValidator]:
    cache, registry = SnapshotCache(), StatusRegistry()
    server = grpc.aio.server()
    servicer = AdsServicer(cache, registry, 30.0, CANARY_GROUP)
    add_to_server(server, servicer)
    socket = tmp_path / "canary.sock"
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    validator = CanaryValidator(cache, registry, str(socket))
    validator.start()
    try:
        yield validator
    finally:
        validator.stop()
        servicer.close()
        await server.stop(1)


async def test_canary_judges_filter_configs_and_secrets(canary: CanaryValidator) -> None:
    port = free_port()
    first = snapshot(port, UPSTREAM, "v1", FIRST_SECRET)
    assert await canary.validate(first) == []
    [objection] = await canary.validate(with_bad_filter_config(first))
    assert objection.startswith(f"Envoy rejected ECDS '{HEADERS_FILTER}'"), objection
    assert FIRST_SECRET not in objection
    # a rotated secret alone: judged (SDS ACKed at its new version) and accepted
    rotated = snapshot(port, UPSTREAM, "v1", SECOND_SECRET)
    assert await canary.validate(rotated) == []
