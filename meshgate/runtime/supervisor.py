"""Run a set of child services, keep them running, and stop them in order.

``meshgate up`` runs several children (demo upstreams, the control plane, Envoy, and the
coming ext_authz, rate-limit and ext_proc services); each is independent of the others at
run time: Envoy keeps serving its last config while the control plane is away and reconnects
when it is back, and a restarted Envoy gets its config again over xDS. So the death of one
child is never a reason to stop another: the supervisor restarts that child after a backoff
(:mod:`meshgate.runtime.restart_policy`), says so, and gives up (stopping everything) only
when the same child keeps crashing.

Start order is the list order, each child ready before the next starts; stop order is the
reverse (Envoy first: no new requests; then the services it calls; then the upstreams).
A stop request (a signal handler calling :meth:`Supervisor.request_stop`) ends any wait at
once: start-up, a backoff, the monitoring loop.

Children are spawned from the thread that calls :meth:`start` and :meth:`run` (the main
thread), because the kernel ties each child's parent-death signal to the spawning thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshgate.runtime.log_relay import ChildLogs, LineFormat, LogRelay
from meshgate.runtime.processes import spawn, wait_or_kill
from meshgate.runtime.restart_policy import (
    CrashHistory,
    GiveUp,
    Restart,
    RestartPolicy,
    describe_exit,
)

log = logging.getLogger("meshgate.supervisor")


def _says_yes(question: Callable[[], bool]) -> bool:
    """A readiness or liveness answer; a probe that raises is a "no", never the supervisor's
    end (a child killed mid-answer leaves a half-read HTTP reply, which is not an OSError)."""
    try:
        return bool(question())
    except Exception:
        return False


class Child:
    """One kind of child: how to start it, when it is ready, how to ask it to stop."""

    #: in messages ("control plane exited ...")
    name: str = "child"
    #: in the log column of text output ("control-plane")
    label: str = "child"
    #: its stdout carries Envoy's JSON access log
    access_log: bool = False
    ready_timeout: float = 30.0
    stop_grace: float = 5.0
    #: Liveness: once ready, :meth:`live` is asked every ``live_interval`` seconds; after
    #: ``live_failures`` answers in a row that say no, the child counts as hung (stopped with
    #: SIGSTOP, deadlocked) and is killed, so the restart policy brings it back. Generous on
    #: purpose: a busy child must never be mistaken for a hung one.
    live_interval: float = 2.0
    live_failures: int = 5

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The child's environment; None inherits ours."""
        return None

    def ready(self) -> bool:
        """Whether the running child does its job yet (polled; must return quickly)."""
        return True

    def live(self) -> bool:
        """Whether the ready child still answers (polled; must return within ~1 s). By
        default whatever says it is ready; a child whose readiness can come and go for
        good reasons (a control plane without a valid config) probes liveness instead."""
        return self.ready()

    def ask_to_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Begin a graceful stop; the supervisor waits ``stop_grace`` then kills."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Release what outlives single runs of the child (e.g. its work directory)."""


class SupervisionFailed(RuntimeError):
    """A child could not be started, or crashed too often: the message says which and why,
    ``stderr_tail`` holds the last lines it wrote on stderr."""

    def __init__(self, message: str, stderr_tail: Sequence[str] = ()) -> None:
        self.message = message
        self.stderr_tail = list(stderr_tail)
        lines = [message, *(f"  {line}" for line in self.stderr_tail)]
        super().__init__("\n".join(lines))


class StopRequested(Exception):
    """A stop was requested while children were still starting."""


#: How a stream is rendered for output: (label, kind) -> line formatter, or None to copy.
FormatFactory = Callable[[str, str], LineFormat | None]


@dataclass
class _Running:
    service: Child
    history: CrashHistory
    proc: subprocess.Popen[bytes] | None = None
    logs: ChildLogs | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    ready: bool = False
    #: next liveness probe, and how many in a row said no
    probe_at: float = 0.0
    dead_probes: int = 0


class Supervisor:
    def __init__(
        self,
        services: Sequence[Child],
        relay: LogRelay,
        stdout_format: FormatFactory | None = None,
        stderr_format: FormatFactory | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 0.1,
    ) -> None:
        self.relay = relay
        self._stdout_format = stdout_format
        self._stderr_format = stderr_format
        self._clock = clock
        self._poll = poll_interval
        # A flag and a self-pipe rather than a threading.Event: Event.set() takes a lock that
        # the main thread may hold at the moment the signal handler runs (a deadlock on
        # Ctrl-C); a pipe write never blocks and wakes a select() at once.
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.children = [_Running(s, CrashHistory(policy)) for s in services]

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe to call from a signal handler or another thread: every wait of the supervisor
        ends at once."""
        self._stopping = True
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):  # a full pipe is awake already
                os.write(self._wake_w, b"x")

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _sleep(self, seconds: float) -> None:
        """Up to ``seconds``, or until a stop is requested."""
        if not self._stopping and self._wake_r >= 0:
            select.select([self._wake_r], [], [], seconds)

    def pids(self) -> dict[str, int]:
        """Running children by name."""
        return {
            c.service.name: c.proc.pid
            for c in self.children
            if c.proc is not None and c.proc.poll() is None
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every child in order, each ready before the next. Raises SupervisionFailed
        when one exits or is not ready in time (no restarts here: a child that cannot start
        once will not be mended by retrying, and the operator wants to know now), and
        StopRequested on a stop request."""
        for child in self.children:
            self._spawn(child)
            deadline = self._clock() + child.service.ready_timeout
            while True:
                if self._stopping:
                    raise StopRequested
                assert child.proc is not None
                code = child.proc.poll()
                if code is not None:
                    raise SupervisionFailed(
                        f"{child.service.name} exited while starting ({describe_exit(code)})",
                        self._tail(child),
                    )
                if _says_yes(child.service.ready):
                    child.ready = True
                    break
                if self._clock() >= deadline:
                    raise SupervisionFailed(
                        f"{child.service.name} was not ready within "
                        f"{child.service.ready_timeout:g} s",
                        self._tail(child),
                    )
                self._sleep(self._poll)

    def run(self) -> None:
        """Keep the children running until a stop is requested; raises SupervisionFailed
        when a child crashed too often."""
        while not self._stopping:
            now = self._clock()
            wait = self._poll
            for child in self.children:
                self._check(child, now)
                if child.restart_at is not None:
                    wait = min(wait, max(0.0, child.restart_at - self._clock()))
            self._sleep(wait)

    def stop(self) -> None:
        """Stop the children in reverse order (waiting for each), then release them."""
        self._stopping = True
        for child in reversed(self.children):
            child.restart_at = None
            proc = child.proc
            if proc is not None and proc.poll() is None:
                child.service.ask_to_stop(proc)
                wait_or_kill(proc, child.service.stop_grace)
        for child in self.children:
            if child.logs is not None:
                child.logs.wait_closed(1.0)
            child.service.close()
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, child: _Running) -> None:
        svc = child.service
        kind = "access" if svc.access_log else "log"
        out_fmt = self._stdout_format(svc.label, kind) if self._stdout_format else None
        err_fmt = self._stderr_format(svc.label, "log") if self._stderr_format else None
        out_w, err_w, child.logs = self.relay.attach(out_fmt, err_fmt)
        try:
            child.proc = spawn(svc.argv(), stdout=out_w, stderr=err_w, env=svc.env())
        finally:
            os.close(out_w)
            os.close(err_w)
        child.started_at = self._clock()
        child.ready = False
        child.probe_at, child.dead_probes = child.started_at, 0

    def _check(self, child: _Running, now: float) -> None:
        svc = child.service
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                self._spawn(child)
                assert child.proc is not None
                log.info(
                    f"{svc.name} restarted (pid {child.proc.pid})",
                    extra={"fields": {"child": svc.name, "pid": child.proc.pid}},
                )
            return
        proc = child.proc
        if proc is None:
            return
        code = proc.poll()
        if code is None:
            if not child.ready and child.history.restarts and _says_yes(svc.ready):
                child.ready = True
                log.info(
                    f"{svc.name} is ready again after {now - child.started_at:.1f} s",
                    extra={"fields": {"child": svc.name, "pid": proc.pid}},
                )
            elif child.ready and now >= child.probe_at:
                self._probe(child, proc, now)
            return
        decision = child.history.crashed(now, child.started_at, code)
        if isinstance(decision, GiveUp):
            raise SupervisionFailed(
                f"{svc.name} crashed {len(decision.exits)} times within "
                f"{child.history.policy.window:g} s ({', '.join(decision.exits)}); giving up",
                self._tail(child),
            )
        self._schedule(child, decision, code)

    def _probe(self, child: _Running, proc: subprocess.Popen[bytes], now: float) -> None:
        """One liveness probe; a child that keeps failing them is killed (and so restarted)."""
        svc = child.service
        child.probe_at = now + svc.live_interval
        if _says_yes(svc.live):
            child.dead_probes = 0
            return
        child.dead_probes += 1
        if child.dead_probes < svc.live_failures:
            return
        log.warning(
            f"{svc.name} did not answer {child.dead_probes} liveness checks in a row "
            f"({svc.live_interval:g} s apart); killing it so that it is restarted",
            extra={"fields": {"child": svc.name, "pid": proc.pid}},
        )
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # SIGKILL also ends a process stopped with SIGSTOP

    def _schedule(self, child: _Running, decision: Restart, code: int) -> None:
        svc = child.service
        child.restart_at = self._clock() + decision.delay
        log.warning(
            f"{svc.name} exited ({describe_exit(code)}); restarting in {decision.delay:g} s "
            f"(restart {decision.number})",
            extra={
                "fields": {
                    "child": svc.name,
                    "exit": describe_exit(code),
                    "restart": decision.number,
                }
            },
        )

    def _tail(self, child: _Running) -> list[str]:
        """The last lines of the child's stderr, for a message about its death."""
        if child.logs is None:
            return []
        child.logs.wait_closed(1.0)  # its last words may still be in the pipe
        return child.logs.stderr_tail()
