"""The publisher alone (injected clock, a validator that objects on demand): what it publishes,
what it records as rejected, and when a rejection is cleared."""

from __future__ import annotations

import logging

import pytest

from meshgate.problems import Problem
from tests.xds_client import mesh
from xds_server.metrics import XdsMetrics
from xds_server.publish.publisher import Publisher
from xds_server.snapshot.cache import SnapshotCache
from xds_server.snapshot.snapshot import Snapshot

GOOD = mesh({"a": 9001}, {"r1": ["a"]}, {"l1": ("r1", 10001)})
OTHER = mesh({"a": 9001}, {"r1": ["a"]}, {"l1": ("r1", 10002)})


class Objector:
    """A validator whose verdict the test sets: Envoy's text, or none."""

    name = "test"

    def __init__(self) -> None:
        self.objections: list[str] = []

    async def validate(self, snapshot: Snapshot) -> list[str]:
        return list(self.objections)


def make() -> tuple[Publisher, Objector, list[float]]:
    now = [1000.0]
    validator = Objector()
    metrics = XdsMetrics()
    pub = Publisher(SnapshotCache(), validator, metrics, "gateway.yaml", clock=lambda: now[0])
    metrics.bind(lambda: pub.accepted, dict)
    return pub, validator, now


def valid(pub: Publisher) -> float | None:
    return pub.metrics.registry.get_sample_value("meshgate_config_valid")


async def test_nothing_published_is_not_valid_yet() -> None:
    pub, _, _ = make()
    assert not pub.accepted and valid(pub) == 0
    assert await pub.offer(GOOD, "d1")
    assert pub.accepted and valid(pub) == 1
    assert (pub.state.version, pub.state.published_at) == (GOOD.version, 1000.0)


async def test_a_rejection_clears_when_the_published_config_is_offered_again() -> None:
    pub, validator, now = make()
    await pub.offer(GOOD, "d1")
    now[0] = 1010.0
    pub.reject([Problem("gateway.yaml", "", "cannot read file: bad utf-8")], "unreadable")
    assert (pub.state.rejected_digest, pub.state.rejected_at) == ("unreadable", 1010.0)
    assert not pub.accepted and valid(pub) == 0
    assert await pub.offer(GOOD, "d1")  # the same file back: nothing to publish
    assert pub.state.errors == [] and pub.state.rejected_digest == ""
    assert pub.accepted and valid(pub) == 1
    assert pub.state.published_at == 1000.0  # it was not published again


async def test_envoys_objection_is_located_by_the_locator_and_keeps_its_origin() -> None:
    pub, validator, _ = make()
    await pub.offer(GOOD, "d1")
    validator.objections = ["Error adding/updating listener(s) l1: no", "something general"]

    async def locate(message: str) -> list[Problem]:
        if "l1" in message:
            return [Problem("gateway.yaml", "listeners[0]", message, 2, 5)]
        return []

    assert not await pub.offer(OTHER, "d2", locate)
    assert pub.state.version == GOOD.version  # the published one stays
    assert pub.state.errors == [
        {
            "file": "gateway.yaml",
            "line": 2,
            "column": 5,
            "path": "listeners[0]",
            "message": "Error adding/updating listener(s) l1: no",
            "origin": "test validator",
        },
        {
            "file": "gateway.yaml",
            "line": None,
            "column": None,
            "path": "",
            "message": "something general",
            "origin": "test validator",
        },
    ]
    validator.objections = []
    assert await pub.offer(OTHER, "d2")
    assert pub.state.version == OTHER.version and pub.accepted


async def test_an_amendment_is_validated_and_keeps_the_configs_rejection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pub, validator, now = make()
    await pub.offer(GOOD, "d1")
    pub.reject([Problem("gateway.yaml", "", "broken edit")], "d2")
    errors = list(pub.state.errors)
    now[0] = 1020.0
    # new signing keys put into the published snapshot: published, the rejection stands
    assert await pub.amend(OTHER, "signing keys")
    assert (pub.current, pub.state.version, pub.state.published_at) == (
        OTHER,
        OTHER.version,
        1020.0,
    )
    assert pub.state.errors == errors and pub.state.rejected_digest == "d2"
    assert pub.state.config_digest == "d1"  # still the config it was compiled from
    assert not pub.accepted and valid(pub) == 0
    assert pub.metrics.registry.get_sample_value(
        "meshgate_config_reloads_total", {"result": "amended"}
    )
    # the same snapshot again: nothing to do
    assert await pub.amend(OTHER, "signing keys")
    # an objection: nothing published, logged, and not taken for the config's problem
    validator.objections = ["Error adding/updating listener(s) l1: no"]
    with caplog.at_level(logging.ERROR, logger="meshgate.publisher"):
        assert not await pub.amend(GOOD, "signing keys")
    assert pub.current is OTHER and pub.state.errors == errors
    assert "a change to the published snapshot was refused" in caplog.text
    assert pub.metrics.registry.get_sample_value(
        "meshgate_config_reloads_total", {"result": "amend_refused"}
    )
