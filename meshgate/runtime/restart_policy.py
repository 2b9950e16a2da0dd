"""When to restart a child that exited, and when to stop trying.

Pure: every decision takes the time as an argument, so the policy is tested with a fake
clock and the supervisor that applies it (:mod:`meshgate.runtime.supervisor`) only does I/O.

A child that dies is restarted after a delay that doubles with each crash in a row
(0.5 s, 1 s, 2 s ... up to 10 s), so a child that cannot start does not spin the machine;
once a child has stayed up a while (10 s), its next crash counts as a fresh one and waits only
0.5 s again. A child that crashed 5 times within 60 s is considered broken: restarting it more
would only hide the problem, so the supervisor gives up and says why.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    initial_delay: float = 0.5
    max_delay: float = 10.0
    #: a child that ran at least this long before crashing restarts the backoff
    stable_after: float = 10.0
    #: give up when this many crashes fall within ``window`` seconds
    max_crashes: int = 5
    window: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_delay <= 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if self.max_crashes < 1 or self.window <= 0:
            raise ValueError("need max_crashes >= 1 and window > 0")


@dataclass(frozen=True)
class Restart:
    """Start the child again after ``delay`` seconds; it is this child's ``number``-th
    restart since ``meshgate up`` started."""

    delay: float
    number: int


@dataclass(frozen=True)
class GiveUp:
    """Too many crashes: ``exits`` describes each crash within ``within`` seconds."""

    exits: tuple[str, ...]
    within: float


def describe_exit(returncode: int) -> str:
    """``signal 9`` for a child killed by a signal (Popen's negative code), else
    ``exit code N``."""
    if returncode < 0:
        return f"signal {-returncode}"
    return f"exit code {returncode}"


class CrashHistory:
    """One child's crashes; :meth:`crashed` says what to do about the latest."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self._recent: deque[tuple[float, int]] = deque()
        self._streak = 0
        self.restarts = 0

    def crashed(self, now: float, started_at: float, returncode: int) -> Restart | GiveUp:
        """The child started at ``started_at`` exited with ``returncode`` at ``now``."""
        p = self.policy
        if now - started_at >= p.stable_after:
            self._streak = 0
        self._recent.append((now, returncode))
        while self._recent and now - self._recent[0][0] > p.window:
            self._recent.popleft()
        if len(self._recent) >= p.max_crashes:
            first = self._recent[0][0]
            return GiveUp(tuple(describe_exit(rc) for _, rc in self._recent), now - first)
        self._streak += 1
        self.restarts += 1
        delay = min(p.initial_delay * 2 ** (self._streak - 1), p.max_delay)
        return Restart(delay, self.restarts)
