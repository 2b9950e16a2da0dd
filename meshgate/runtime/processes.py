"""Child processes that never outlive us: spawn with a parent-death signal, stop in steps.

Every long-running child of a meshgate process (Envoy, the control plane, demo upstreams, a
canary Envoy) is started here, so all of them share the two guarantees that make a crash or a
``kill -9`` of the parent harmless: the kernel sends the child SIGTERM when its parent dies,
and it runs in its own session, so a terminal's Ctrl-C reaches only the parent, which then
stops the children in the order it wants.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import IO

_PR_SET_PDEATHSIG = 1


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; what every message about a child killed by a signal names."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


def _die_with(parent: int) -> Callable[[], None]:
    """In the child, before exec: get SIGTERM when the parent dies (Linux only), and give up
    at once if it already died between fork and here (the signal would never come).

    The kernel ties the parent-death signal to the *thread* that forked, so callers spawn
    from a thread that lives as long as the child should (``meshgate up`` spawns from its
    main thread only)."""

    def preexec() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with us and ignores the terminal's Ctrl-C (we stop it in order)."""
    return subprocess.Popen(
        list(argv),
        stdout=stdout,
        stderr=stderr,
        env=env,
        preexec_fn=_die_with(os.getpid()),
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    return wait_or_kill(proc, grace)


def wait_or_kill(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """Wait up to ``grace`` seconds for a child already asked to stop, then SIGKILL it."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    return proc.returncode
