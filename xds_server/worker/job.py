"""One compile: config file (+ discovered endpoints) -> packed Envoy resources, or problems.

This runs in the compile worker process (see ``__main__``), but it is plain code: the tests
call :func:`run_job` in-process. What goes back to the control plane is deliberately small and
flat: each resource's name, type URL, serialized bytes and version, which the control plane
turns back into a :class:`Snapshot` without parsing or compiling anything (:func:`to_snapshot`).
The parsed model, the YAML data and every intermediate object die with the worker.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import any_pb2

from meshgate.config import Endpoint
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES, read_config_text
from meshgate.loader import parse_config
from meshgate.problems import ConfigError, Problem
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits
from xds_server.compiler import compile_snapshot
from xds_server.publish.locate import located_problems
from xds_server.snapshot.snapshot import InconsistentSnapshotError, Resource, Snapshot
from xds_server.worker.secret_values import read_secrets


@dataclass(frozen=True)
class CompileJob:
    path: str
    discovered: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: Skip parsing when the file's digest is still this (see CompileInput.known_digest).
    known_digest: str | None = None
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    limits: YamlLimits = DEFAULT_LIMITS
    #: Seconds the file must have been left alone before it is read (see ``read_settled``).
    settle: float = 0.0


#: One resource as it crosses the pipe: (name, type URL, serialized message, version). A plain
#: tuple: unpickling 20,000 frozen dataclasses took 0.3 s of the control plane's loop.
PackedResource = tuple[str, str, bytes, str]


@dataclass(frozen=True)
class Compiled:
    digest: str
    resources: tuple[PackedResource, ...]
    labels: Mapping[str, str]
    #: read + parse + validate + compile, inside the worker
    seconds: float


@dataclass(frozen=True)
class Rejected:
    digest: str
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class Unchanged:
    """The file still has the digest whose outcome stands; nothing to do."""

    digest: str


Outcome = Compiled | Rejected | Unchanged


def digest_of(text: str) -> str:
    """The config's content digest, as the loader computes it (status shows it)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: How often a file that keeps changing is looked at again before what was read is used.
_SETTLE_ROUNDS = 50


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_settled(path: str, max_bytes: int, settle: float) -> str:
    """The file's text once nobody is writing it: a file modified less than ``settle``
    seconds ago is waited for, and one that changed while it was read is read again.

    An in-place write (truncate, then write) or a slow copy seen half-way is a shorter file,
    and a shorter config is often still valid (its last routes cut off): compiling it would
    publish half a config. Waiting here costs nothing when the file is old, and a newer
    change kills this worker anyway. Bounded: a file rewritten without pause for
    ``_SETTLE_ROUNDS`` rounds is taken as last read (the compile timeout bounds it too)."""
    text = ""
    for _ in range(_SETTLE_ROUNDS):
        before = _stat_key(path)
        if before is not None and settle > 0:
            age = time.time() - before[0] / 1e9
            if 0 <= age < settle or age < 0:  # fresh (or from the future: a skewed clock)
                time.sleep(min(settle - age, settle) if age >= 0 else settle)
                if _stat_key(path) != before:
                    continue
        text = read_config_text(path, max_bytes)
        if _stat_key(path) == before:
            return text
    return text


def run_job(job: CompileJob) -> Outcome:
    """Read, parse, validate, read the secrets it names, and compile; every failure becomes
    problems, never an exception.

    The file is read once, by the loader's bounded reader (regular files only, at most
    ``max_bytes``, never blocking), and the digest is of exactly what is parsed."""
    started = time.perf_counter()
    try:
        text = read_settled(job.path, job.max_bytes, job.settle)
    except ConfigError as exc:
        return Rejected("unreadable", tuple(exc.report()))
    digest = digest_of(text)
    if digest == job.known_digest:
        return Unchanged(digest)
    try:
        loaded = parse_config(text, job.path, job.limits)
        labels = {"source": loaded.source, "digest": digest}
        secrets = read_secrets(loaded.config, job.path, text)
        snapshot = compile_snapshot(loaded.config, job.discovered, labels, secrets=secrets)
    except ConfigError as exc:
        return Rejected(digest, tuple(exc.report()))
    except InconsistentSnapshotError as exc:
        return Rejected(digest, (Problem(job.path, "", str(exc), origin="compiler"),))
    except Exception as exc:  # a loader or compiler bug must still be reported, not swallowed
        message, report = bug_report(exc)
        print(report, file=sys.stderr, flush=True)  # the worker's stderr is the control plane's
        return Rejected(digest, (Problem(job.path, "", message, origin="compiler bug"),))
    resources = tuple(
        (r.name, r.type_url, r.any.value, r.version)
        for by_name in snapshot.resources.values()
        for r in by_name.values()
    )
    return Compiled(digest, resources, labels, time.perf_counter() - started)


def locate_in_file(job: CompileJob, digest: str, message: str) -> list[Problem]:
    """Envoy's ``message`` traced back to the config file's paths and lines, as long as the
    file still holds the content that was compiled (``digest``); else nothing is certain and
    the message stands alone."""
    try:
        text = read_config_text(job.path, job.max_bytes)
        if digest_of(text) != digest:
            return []
        loaded = parse_config(text, job.path, job.limits)
    except ConfigError:
        return []
    return located_problems(message, loaded.config, loaded.source, text)


def to_snapshot(compiled: Compiled) -> Snapshot:
    """Rebuild the snapshot from packed bytes: no parsing, no compiling, no consistency walk
    (the worker checked it); about 0.1 s for 20,000 resources."""
    return Snapshot.build(
        (
            Resource(name, type_url, any_pb2.Any(type_url=type_url, value=value), version)
            for name, type_url, value, version in compiled.resources
        ),
        compiled.labels,
    )


def bug_report(exc: BaseException) -> tuple[str, str]:
    """(the problem shown in status, the report for the log) of an unexpected exception.

    Neither quotes the exception's own text: a loader or compiler bug may put a config value
    (a header to add, a credential) into it, and redaction recognises credentials only by
    their shape. Where it was raised, and its type, are what a bug report needs.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    kind = type(exc).__name__
    message = (
        f"cannot load the file: internal error ({kind}{where}); the last good config keeps "
        "serving; please report it with the control plane's log"
    )
    stack = "".join(traceback.format_list(frames))
    report = (
        f"Traceback (most recent call last):\n{stack}{kind}: (message withheld: it may quote "
        "config values)"
    )
    return message, report
