"""The restart policy of ``meshgate up``'s supervisor, driven by a fake clock."""

from __future__ import annotations

import pytest

from meshgate.runtime.restart_policy import (
    CrashHistory,
    GiveUp,
    Restart,
    RestartPolicy,
    describe_exit,
)


def test_backoff_doubles_from_half_a_second_up_to_ten() -> None:
    h = CrashHistory(RestartPolicy(max_crashes=100, window=60))
    delays = []
    now = 0.0
    for _ in range(8):
        started = now
        now = started + 0.1  # crashed right after starting
        d = h.crashed(now, started, -9)
        assert isinstance(d, Restart)
        delays.append(d.delay)
        now += d.delay
    assert delays == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_restart_numbers_count_every_restart_of_the_child() -> None:
    h = CrashHistory(RestartPolicy(max_crashes=100))
    numbers = []
    for i in range(3):
        d = h.crashed(100.0 * i + 50, 100.0 * i, 1)
        assert isinstance(d, Restart)
        numbers.append(d.number)
    assert numbers == [1, 2, 3]


def test_a_child_that_stayed_up_starts_the_backoff_again() -> None:
    h = CrashHistory(RestartPolicy(stable_after=10, max_crashes=100))
    assert h.crashed(1.0, 0.0, 1) == Restart(0.5, 1)
    assert h.crashed(2.0, 1.5, 1) == Restart(1, 2)
    assert h.crashed(3.5, 3.0, 1) == Restart(2, 3)
    # up 10 s before this crash: fresh start of the backoff
    assert h.crashed(15.5, 5.5, 1) == Restart(0.5, 4)
    assert h.crashed(16.5, 16.0, 1) == Restart(1, 5)


def test_gives_up_at_the_fifth_crash_within_a_minute() -> None:
    h = CrashHistory()
    now = 0.0
    for _ in range(4):
        d = h.crashed(now + 0.1, now, -9)
        assert isinstance(d, Restart)
        now += 0.1 + d.delay
    d = h.crashed(now + 0.1, now, 3)
    assert isinstance(d, GiveUp)
    assert d.exits == ("signal 9", "signal 9", "signal 9", "signal 9", "exit code 3")
    assert d.within == pytest.approx(now + 0.1 - 0.1)


def test_crashes_older_than_the_window_do_not_count() -> None:
    h = CrashHistory(RestartPolicy(max_crashes=3, window=60))
    assert isinstance(h.crashed(0.0, 0.0, 1), Restart)
    assert isinstance(h.crashed(30.0, 29.0, 1), Restart)
    # the first crash is 61 s old now: two within the window, not three
    assert isinstance(h.crashed(61.0, 60.0, 1), Restart)
    assert isinstance(h.crashed(62.0, 61.5, 1), GiveUp)


def test_describe_exit() -> None:
    assert describe_exit(-9) == "signal 9"
    assert describe_exit(-15) == "signal 15"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(1) == "exit code 1"


@pytest.mark.parametrize(
    "kw",
    [{"initial_delay": 0}, {"initial_delay": 2, "max_delay": 1}, {"max_crashes": 0}],
)
def test_nonsense_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kw)  # type: ignore[arg-type]
