"""A rejected update is retried after a backoff: a fleet Envoy may refuse it for a reason of its
own host (a listener port held by another process) that later goes away."""

from __future__ import annotations

from tests.xds_client import route
from xds_server.server.planner import Planner
from xds_server.snapshot.snapshot import ROUTE, Snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _planner(clock: Clock) -> tuple[Planner, Snapshot]:
    planner = Planner(lambda _t: True, clock=clock)
    tr = planner.track(ROUTE)
    tr.active, tr.names, tr.must_answer = True, {"r1"}, True
    return planner, Snapshot.build([route("r1", ["a"])])


def test_rejected_version_is_retried_with_a_doubling_backoff() -> None:
    clock = Clock()
    planner, snap = _planner(clock)
    [first] = planner.plan(snap)
    planner.nack(first.track)
    assert planner.plan(snap) == []  # not resent at once
    assert planner.retry_in() == 30.0
    clock.now += 29.0
    assert planner.plan(snap) == []
    clock.now += 1.0
    [again] = planner.plan(snap)
    assert again.version == first.version
    assert planner.retry_in() is None  # the retry is in flight: nothing to wake up for
    planner.nack(again.track)
    assert planner.retry_in() == 60.0  # doubled
    clock.now += 60.0
    [third] = planner.plan(snap)
    planner.ack(third.track)
    assert planner.retry_in() is None
    assert planner.plan(snap) == []  # accepted: nothing more to send


def test_the_canary_never_retries() -> None:
    clock = Clock()
    planner, snap = _planner(clock)
    planner.retry_rejected = False
    [first] = planner.plan(snap)
    planner.nack(first.track)
    assert planner.retry_in() is None
    clock.now += 10_000
    assert planner.plan(snap) == []


def test_a_rejection_the_config_moved_away_from_is_forgotten() -> None:
    """After a NACK, the config goes back to what the client holds: nothing is left to retry,
    so the stream must not keep waking up for the passed retry time (it did, every 50 ms)."""
    clock = Clock()
    planner, good = _planner(clock)
    [first] = planner.plan(good)
    planner.ack(first.track)
    bad = Snapshot.build([route("r1", ["b"])])
    [refused] = planner.plan(bad)
    planner.nack(refused.track)
    assert planner.retry_in() == 30.0
    assert planner.plan(good) == []  # the client holds it already
    clock.now += 31.0
    assert planner.retry_in() is None
    assert planner.plan(good) == []
    # published again later, it is a new attempt: sent at once, not after a backoff
    [again] = planner.plan(bad)
    assert again.version == refused.version
