"""What runs in the forked compile worker: one job, one answer, then the process is gone.

The worker is forked from a server process that imported the loader and the compiler once
(see :mod:`xds_server.worker.runner`), so it starts in milliseconds with its imports done. It
answers one job and exits: the memory of a huge config goes back to the system with the
process, which no amount of freeing inside a long-lived Python process guarantees.

The pipe carries a pickle from a child of the control plane's own code, never anything
from outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import signal
from multiprocessing.connection import Connection

from xds_server.worker.job import CompileJob, locate_in_file, run_job


def die_with_parent() -> None:
    """SIGKILL when our parent (the fork server) dies, as it does when the control plane dies,
    so no worker outlives the control plane, even after ``kill -9`` (Linux only)."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def serve_one(job: CompileJob, conn: Connection) -> None:
    """The worker's whole life: compile ``job``, send the outcome, exit at once."""
    die_with_parent()
    # A one-shot process: nothing it allocates needs the cycle collector, and the collector
    # scanning a 100,000-route model again and again costs seconds.
    gc.disable()
    conn.send_bytes(pickle.dumps(run_job(job), protocol=pickle.HIGHEST_PROTOCOL))
    conn.close()
    # Skip tearing down the heap object by object: the kernel takes it back at once.
    os._exit(0)


def locate_one(job: CompileJob, digest: str, message: str, conn: Connection) -> None:
    """Trace one objection of Envoy's back to the config file (see ``locate_in_file``)."""
    die_with_parent()
    gc.disable()
    problems = locate_in_file(job, digest, message)
    conn.send_bytes(pickle.dumps(problems, protocol=pickle.HIGHEST_PROTOCOL))
    conn.close()
    os._exit(0)
