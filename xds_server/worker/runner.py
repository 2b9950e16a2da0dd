"""The control plane's side of the compile worker: one child at a time, the newest input wins.

Why a child process, not a thread: parsing and validating are pure Python and hold the GIL
for seconds on a large config (a thread would freeze xDS, /healthz and /status as surely as
the event loop did), and memory a long-lived CPython process has touched is not reliably given
back to the system. A process that exits gives all of it back.

Why forked from a warm server: starting Python and importing protobuf, the Envoy protos and
pydantic takes about 0.3 s (a second or more on a busy machine), which would be added to every
config change. multiprocessing's fork server is a small process, started once, that imports
the loader and the compiler and then forks one worker per job: the worker starts in
milliseconds with its imports done, and the fork server itself never parses a config, so it
stays small. The control plane itself never forks (it runs gRPC threads).

The newest input wins: a new input while a compile runs kills that worker (SIGKILL) and
starts on the new input, and an outcome is handed on only if no newer input arrived while it
was computed, so an older config is never published after a newer one. A worker that dies
(OOM killer, crash) or takes longer than ``timeout`` is reported as a rejection that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.problems import Problem
from meshgate.runtime.gc_pause import gc_paused
from meshgate.runtime.processes import signal_name
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits
from xds_server.sources.state import CompileInput
from xds_server.worker.child import locate_one, serve_one
from xds_server.worker.job import Compiled, CompileJob, Outcome, Rejected, Unchanged

log = logging.getLogger("meshgate.compile_worker")

Deliver = Callable[[CompileInput, Outcome], Awaitable[None]]
Target = Callable[[CompileJob, Connection], None]

#: Fork server with the loader and compiler imported; every worker is a fork of it.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["xds_server.worker.child"])

#: What the worker's problems name as their origin.
ORIGIN = "compile worker"


class StartTimeout(TimeoutError):
    """No worker started within the timeout: the fork server did not answer (stopped,
    swapped out, wedged)."""


def crash_problem(path: str, returncode: int) -> Problem:
    """The one line an operator needs when the worker died instead of answering."""
    if returncode < 0:
        signum = -returncode
        reason = f"worker exited with signal {signum} ({signal_name(signum)})"
        if signum == signal.SIGKILL:
            reason += "; unless someone killed it, the kernel ran out of memory (see dmesg)"
    else:
        reason = f"worker exited with status {returncode} (its error is in this log above)"
    return Problem(path, "", f"compiling {path} failed: {reason}", origin=ORIGIN)


class CompileRunner:
    def __init__(
        self,
        deliver: Deliver,
        *,
        timeout: float = 300.0,
        max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
        limits: YamlLimits = DEFAULT_LIMITS,
        target: Target = serve_one,
        settle: float = 0.0,
        max_files: int = DEFAULT_MAX_CONFIG_FILES,
    ):
        self._deliver = deliver
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.limits = limits
        self.max_files = max_files
        self._target = target
        #: A file changed less than this ago is waited for (it may still be being written).
        self.settle = settle
        self._pending: CompileInput | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._job: asyncio.Task[Outcome] | None = None
        self.running: CompileInput | None = None
        self.running_since: float | None = None
        self.running_pid: int | None = None
        self.last: dict[str, Any] | None = None
        self.superseded = 0
        #: ``run`` is serving submissions (else ``run_pending`` must be called)
        self.active = False

    # -- control plane side ------------------------------------------------------------
    def submit(self, request: CompileInput) -> None:
        """Compile ``request`` next; a compile in progress is abandoned (its worker killed)."""
        self._pending = request
        self._idle.clear()
        self._wake.set()
        if self._job is not None and not self._job.done():
            self.superseded += 1
            self._job.cancel()

    async def run(self) -> None:
        """Compile each newest input and hand on its outcome, until cancelled."""
        self.active = True
        try:
            # start the fork server (and its imports) now, off the event loop, not on the
            # first job
            try:
                await asyncio.to_thread(_warm_up)
            except Exception:  # the first job tries again, and says why if it cannot
                log.exception("cannot start the compile workers' fork server")
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self.run_pending()
        finally:
            self.active = False

    async def run_pending(self) -> None:
        """Compile the newest submitted input, if any, and hand on its outcome (``run`` does
        this on every submit; a control plane that is not running calls it directly)."""
        request, self._pending = self._pending, None
        if request is None:
            self._mark_idle()
            return
        self.running, self.running_since = request, time.time()
        started = time.perf_counter()
        self._job = asyncio.create_task(self._compile(request))
        try:
            # wait() does not raise when the job is cancelled by submit(); it raises only
            # when the caller itself is cancelled (stop() then ends the job).
            await asyncio.wait({self._job})
        finally:
            self.running = self.running_since = self.running_pid = None
        if self._job.cancelled() or self._pending is not None:
            log.info(
                "compile superseded by a newer input",
                extra={"fields": {"generation": request.generation}},
            )
            self._mark_idle()
            return
        failure = self._job.exception()
        if failure is not None:  # e.g. the fork server cannot be started
            path = request.config.path
            message = f"compiling {path} failed: cannot run a worker: {failure!r}"
            outcome: Outcome = Rejected(
                "worker-failed", (Problem(path, "", message, origin=ORIGIN),)
            )
        else:
            outcome = self._job.result()
        self.last = _summary(request, outcome, time.perf_counter() - started)
        try:
            await self._deliver(request, outcome)
        except Exception:  # a publishing bug must not stop all future compiles
            log.exception("handling a compile outcome failed")
        self._mark_idle()

    def _mark_idle(self) -> None:
        if self._pending is None:
            self._idle.set()

    async def idle(self) -> None:
        """Until every input submitted so far has been compiled and its outcome handled."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Kill the worker of a compile in progress; returns once it is gone."""
        if self._job is not None and not self._job.done():
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job

    def as_dict(self) -> dict[str, Any]:
        running = None
        if self.running is not None:
            running = {
                "generation": self.running.generation,
                "path": self.running.config.path,
                "since": self.running_since,
                "pid": self.running_pid,
            }
        return {
            "running": running,
            "last": self.last,
            "superseded": self.superseded,
        }

    # -- the worker ---------------------------------------------------------------------
    async def locate(self, path: str, digest: str, message: str) -> list[Problem]:
        """Envoy's objection traced back to the config file, by a worker (which parses the
        file again); empty when it cannot be told for certain or the worker fails."""
        try:
            job = CompileJob(
                path, max_bytes=self.max_bytes, limits=self.limits, max_files=self.max_files
            )
            data, code = await self._run(locate_one, (job, digest, message))
        except TimeoutError:
            return []
        if code != 0 or data is None:
            return []
        with contextlib.suppress(Exception):
            problems = await asyncio.to_thread(_unpickle, data)
            if isinstance(problems, list) and all(isinstance(p, Problem) for p in problems):
                return problems
        return []

    async def _compile(self, request: CompileInput) -> Outcome:
        path = request.config.path
        job = CompileJob(
            path,
            request.discovered,
            request.known_digest,
            self.max_bytes,
            self.limits,
            settle=self.settle,
            max_files=self.max_files,
            jwks=request.jwks,
            known_secrets=request.known_secrets,
        )
        try:
            data, code = await self._run(self._target, (job,), self._started)
        except StartTimeout:
            message = (
                f"compiling {path} failed: no worker started within {self.timeout:g} s (the "
                "compile workers' fork server did not answer; it was killed and the next "
                "compile starts a new one)"
            )
            return Rejected("timeout", (Problem(path, "", message, origin=ORIGIN),))
        except TimeoutError:
            message = f"compiling {path} failed: no result after {self.timeout:g} s"
            return Rejected("timeout", (Problem(path, "", message, origin=ORIGIN),))
        if code != 0 or data is None:
            return Rejected("worker-failed", (crash_problem(path, code or 0),))
        try:
            outcome = await asyncio.to_thread(_unpickle, data)
        except Exception as exc:
            message = f"compiling {path} failed: unreadable answer from the worker ({exc!r})"
            return Rejected("worker-failed", (Problem(path, "", message, origin=ORIGIN),))
        if not isinstance(outcome, Compiled | Rejected | Unchanged):
            message = f"compiling {path} failed: unexpected answer {type(outcome).__name__}"
            return Rejected("worker-failed", (Problem(path, "", message, origin=ORIGIN),))
        return outcome

    def _started(self, pid: int | None) -> None:
        self.running_pid = pid

    async def _run(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        on_start: Callable[[int | None], None] | None = None,
    ) -> tuple[bytes | None, int | None]:
        """Fork a worker running ``target(*args, conn)``: its answer (None if it died
        first) and exit code. Raises TimeoutError after ``timeout``; a cancel or a timeout
        kills the worker before this returns."""
        receiver, sender = _CONTEXT.Pipe(duplex=False)
        proc = _CONTEXT.Process(
            target=target, args=(*args, sender), name="meshgate-compile", daemon=True
        )
        # start() talks to the fork server (and restarts it if it died, imports and all):
        # in a thread, shielded so that a cancel cannot lose a started worker
        starting = asyncio.ensure_future(asyncio.to_thread(proc.start))
        try:
            # bounded too: a stopped fork server would otherwise hold every compile forever
            try:
                async with asyncio.timeout(self.timeout):
                    await asyncio.shield(starting)
            except TimeoutError as exc:
                _kill_fork_server()  # releases the start blocked on its answer
                raise StartTimeout() from exc
        except BaseException:  # cancelled, timed out, or the fork server could not be reached
            with contextlib.suppress(Exception):
                await starting
            await _kill(proc)
            receiver.close()
            raise
        finally:
            sender.close()
        if on_start is not None:
            on_start(proc.pid)
        try:
            async with asyncio.timeout(self.timeout):
                data = await asyncio.to_thread(_receive, receiver)
                await _exited(proc)
        finally:
            if proc.exitcode is None:  # cancelled (superseded, stopping) or timed out
                await _kill(proc)
        return data, proc.exitcode


def _unpickle(data: bytes) -> Any:
    """In a thread, with the cycle collector paused: a large answer is tens of thousands of
    objects, and the loop keeps getting the GIL every few milliseconds meanwhile."""
    with gc_paused():
        return pickle.loads(data)


def _noop() -> None:
    pass


def _warm_up() -> None:
    """Start the fork server and wait until its imports are done (one empty worker)."""
    proc = _CONTEXT.Process(target=_noop, name="meshgate-compile-warmup", daemon=True)
    proc.start()
    proc.join()


def _kill_fork_server() -> None:
    """SIGKILL the fork server (ours): multiprocessing starts a new one on the next start."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if isinstance(pid, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        _await_death(pid)
    log.error(
        "the compile workers' fork server did not answer; killed", extra={"fields": {"pid": pid}}
    )


def _await_death(pid: int, limit: float = 5.0) -> None:
    """Wait (bounded) until the killed fork server is a zombie, without reaping it.

    multiprocessing decides whether to start a new fork server with ``waitpid(WNOHANG)``; asked
    while the SIGKILL is still on its way (a loaded machine), it finds the old one "alive",
    connects to its dead socket and the next compile fails. ``WNOWAIT`` leaves the zombie for
    multiprocessing to reap.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def _receive(conn: Connection) -> bytes | None:
    """The worker's answer; None when it died first. Runs in a thread, and closes the pipe
    itself, so a cancelled compile never closes it under a blocked read."""
    try:
        return conn.recv_bytes()
    except (EOFError, OSError):
        return None
    finally:
        conn.close()


async def _exited(proc: BaseProcess) -> None:
    """Until the worker has exited (its sentinel becomes readable), without blocking."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(proc.sentinel, ready)
    try:
        await done
    finally:
        loop.remove_reader(proc.sentinel)
    proc.join(0)


async def _kill(proc: BaseProcess) -> None:
    if proc.exitcode is None and proc.pid is not None:
        with contextlib.suppress(ProcessLookupError, OSError):
            proc.kill()
        await _exited(proc)


def _summary(request: CompileInput, outcome: Outcome, seconds: float) -> dict[str, Any]:
    result = {Compiled: "compiled", Rejected: "rejected", Unchanged: "unchanged"}[type(outcome)]
    return {
        "generation": request.generation,
        "result": result,
        "digest": outcome.digest,
        "seconds": round(seconds, 4),
        "finished_at": time.time(),
    }
