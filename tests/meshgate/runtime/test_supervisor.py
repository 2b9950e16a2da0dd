"""The supervisor with real child processes (small Python programs, no Envoy): restarts,
giving up, stop order, and prompt stops."""

from __future__ import annotations

import http.client
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from meshgate.runtime.log_relay import LogRelay, Sink
from meshgate.runtime.restart_policy import RestartPolicy
from meshgate.runtime.supervisor import Child, StopRequested, SupervisionFailed, Supervisor
from tests.support.control_plane import wait_until

# Sleeps until SIGTERM, then notes its name in a file (to check the stop order) and exits;
# ready once the file <notes>.<name> exists.
SLEEPER = r"""
import signal, sys, time
name, notes = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(notes, "a") as f:
        f.write(name + "\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(notes + "." + name, "w").close()  # ready: the handler is in place
while True:
    time.sleep(1)
"""


class Program(Child):
    def __init__(self, name: str, code: str, *args: str, ready: bool = True) -> None:
        self.name = self.label = name
        self.code = code
        self.args = args
        self._ready = ready
        self.stop_grace = 3.0
        self.ready_timeout = 10.0
        self.closed = False

    def argv(self) -> list[str]:
        return [sys.executable, "-c", self.code, *self.args]

    def ready(self) -> bool:
        if self.code is SLEEPER:
            return self._ready and Path(f"{self.args[1]}.{self.args[0]}").exists()
        return self._ready

    def close(self) -> None:
        self.closed = True


class Driven:
    """A supervisor run in a thread that lives as long as its children (the parent-death
    signal is tied to the spawning thread), as ``meshgate up``'s main thread does."""

    def __init__(self, services: list[Child], policy: RestartPolicy, tmp: Path) -> None:
        self.out = (tmp / "out.log").open("wb")
        self.relay = LogRelay(Sink(self.out.fileno()), Sink(self.out.fileno()))
        self.sup = Supervisor(services, self.relay, policy=policy, poll_interval=0.02)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        try:
            self.sup.start()
            self.sup.run()
        except (SupervisionFailed, StopRequested) as exc:
            self.error = exc
        finally:
            self.sup.stop()
            self.relay.close()

    def started(self) -> bool:
        """Every child started and ready: the supervisor is in its monitoring loop."""
        return all(c.ready for c in self.sup.children)

    def pid(self, name: str) -> int | None:
        return self.sup.pids().get(name)

    def finish(self, timeout: float = 15.0) -> None:
        self.sup.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the supervisor did not stop"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


FAST = RestartPolicy(initial_delay=0.05, max_delay=0.2, max_crashes=5, window=60)


def test_a_killed_child_is_restarted_and_the_others_keep_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notes = str(tmp_path / "notes")
    caplog.set_level(logging.INFO, "meshgate.supervisor")
    d = Driven(
        [Program("a", SLEEPER, "a", notes), Program("b", SLEEPER, "b", notes)], FAST, tmp_path
    )
    try:
        wait_until(d.started, 10, "started")
        first_a, b = d.pid("a"), d.pid("b")
        assert first_a and b
        os.kill(first_a, signal.SIGKILL)
        new_a = wait_until(lambda: (p := d.pid("a")) != first_a and p, 10, "a restarted")
        assert new_a != first_a and _alive(new_a)
        assert d.pid("b") == b  # untouched
        messages = [r.getMessage() for r in caplog.records]
        assert "a exited (signal 9); restarting in 0.05 s (restart 1)" in messages
        assert f"a restarted (pid {new_a})" in messages
    finally:
        d.finish()
    assert d.error is None
    assert not _alive(new_a) and not _alive(b)


def test_a_child_that_keeps_crashing_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    notes = str(tmp_path / "notes")
    crasher = (
        "import sys, time; print('cannot bind 127.0.0.1:1: permission denied', "
        "file=sys.stderr, flush=True); time.sleep(0.2); sys.exit(3)"
    )
    other = Program("other", SLEEPER, "other", notes)
    d = Driven([other, Program("crasher", crasher)], FAST, tmp_path)
    d.thread.join(30)
    assert not d.thread.is_alive()
    err = d.error
    assert isinstance(err, SupervisionFailed)
    assert err.message == (
        "crasher crashed 5 times within 60 s (exit code 3, exit code 3, exit code 3, "
        "exit code 3, exit code 3); giving up"
    )
    assert err.stderr_tail == ["cannot bind 127.0.0.1:1: permission denied"]
    assert Path(notes).read_text() == "other\n"  # the others were stopped too
    assert other.closed


def test_children_stop_in_reverse_order(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    names = ["upstream", "control-plane", "envoy"]
    d = Driven([Program(n, SLEEPER, n, str(notes)) for n in names], FAST, tmp_path)
    wait_until(d.started, 10, "all started")
    d.finish()
    assert notes.read_text().split() == ["envoy", "control-plane", "upstream"]


def test_a_stop_during_a_backoff_is_prompt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "meshgate.supervisor")
    slow = RestartPolicy(initial_delay=60, max_delay=60)
    d = Driven([Program("a", SLEEPER, "a", str(tmp_path / "notes"))], slow, tmp_path)
    wait_until(d.started, 10, "started")
    pid = d.pid("a")
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: any("restarting in 60 s" in r.getMessage() for r in caplog.records),
        10,
        "the restart is scheduled",
    )
    d.finish(timeout=5)  # well before the 60 s backoff ends
    assert d.error is None and d.sup.pids() == {}


def test_a_child_that_dies_while_starting_fails_the_start_with_its_last_words(
    tmp_path: Path,
) -> None:
    notes = str(tmp_path / "notes")
    dies = "import sys; print('error: no such file: gw.yaml', file=sys.stderr); sys.exit(2)"
    first = Program("first", SLEEPER, "first", notes)
    never = Program("never", SLEEPER, "never", notes)
    d = Driven([first, Program("dies", dies, ready=False), never], FAST, tmp_path)
    d.thread.join(20)
    err = d.error
    assert isinstance(err, SupervisionFailed)
    assert err.message == "dies exited while starting (exit code 2)"
    assert err.stderr_tail == ["error: no such file: gw.yaml"]
    assert Path(notes).read_text() == "first\n"  # the third was never started
    assert first.closed and never.closed


def test_a_stop_while_starting_ends_the_wait(tmp_path: Path) -> None:
    d = Driven([Program("slow", SLEEPER, "slow", str(tmp_path / "n"), ready=False)], FAST, tmp_path)
    pid = wait_until(lambda: d.pid("slow"), 10, "started")
    d.finish(timeout=5)
    assert isinstance(d.error, StopRequested)
    assert not _alive(pid)


class Answering(Program):
    """Answers its liveness probe while it runs, not while it is stopped (SIGSTOP): what a
    health endpoint does, read here from the process state so the test needs no server."""

    live_interval = 0.05
    live_failures = 3

    def __init__(self, *args: str) -> None:
        super().__init__("hangs", SLEEPER, *args)
        self.pid = 0

    def live(self) -> bool:
        if not self.pid:  # not looked up by the test yet
            return True
        state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "T"


def test_a_hung_child_fails_its_liveness_checks_and_is_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notes = str(tmp_path / "notes")
    caplog.set_level(logging.INFO, "meshgate.supervisor")
    child = Answering("hangs", notes)
    d = Driven([child], FAST, tmp_path)
    try:
        wait_until(d.started, 10, "started")
        first = d.pid("hangs")
        assert first
        child.pid = first
        # a few probes pass while it runs
        wait_until(lambda: d.sup.children[0].probe_at > d.sup.children[0].started_at + 0.1, 5)
        os.kill(first, signal.SIGSTOP)
        new = wait_until(lambda: (p := d.pid("hangs")) != first and p, 10, "restarted")
        child.pid = new
        assert not _alive(first)
        messages = [r.getMessage() for r in caplog.records]
        assert (
            "hangs did not answer 3 liveness checks in a row (0.05 s apart); killing it so "
            "that it is restarted"
        ) in messages
        assert any(m.startswith("hangs exited (signal 9); restarting") for m in messages)
    finally:
        d.finish()


class Stammering(Program):
    """A readiness probe that raises the way a half-read HTTP answer does (a child killed
    mid-reply): ``http.client.IncompleteRead`` is not an OSError. The first answers raise,
    then it answers yes."""

    def __init__(self, *args: str, raises: int) -> None:
        super().__init__("stammers", SLEEPER, *args)
        self.raises = raises

    def ready(self) -> bool:
        if self.raises > 0:
            self.raises -= 1
            raise http.client.IncompleteRead(b"", 63)
        return super().ready()


def test_a_readiness_probe_that_raises_is_a_no_not_the_supervisors_end(tmp_path: Path) -> None:
    notes = str(tmp_path / "notes")
    child = Stammering("stammers", notes, raises=3)
    d = Driven([child], FAST, tmp_path)
    try:
        wait_until(d.started, 10, "started despite probes that raised")
        first = d.pid("stammers")
        assert first
        child.raises = 3  # the same again after a restart, in the monitoring loop
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: (p := d.pid("stammers")) != first and p, 10, "restarted")
        wait_until(d.started, 10, "ready again despite probes that raised")
        assert d.error is None and d.thread.is_alive()
    finally:
        d.finish()
