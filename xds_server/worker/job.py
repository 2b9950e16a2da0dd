"""One compile: config files (+ discovered endpoints) -> packed Envoy resources, or problems.

This runs in the compile worker process (see ``__main__``), but it is plain code: the tests
call :func:`run_job` in-process. What goes back to the control plane is deliberately small and
flat: each resource's name, type URL, serialized bytes and version, which the control plane
turns back into a :class:`Snapshot` without parsing or compiling anything (:func:`to_snapshot`).
The parsed model, the YAML data and every intermediate object die with the worker.
"""

from __future__ import annotations

import hashlib
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import any_pb2

from meshgate.config import Endpoint
from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES, read_config_files
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES, Signature
from meshgate.loader import LoadedConfig, parse_files
from meshgate.problems import ConfigError, Problem
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits
from xds_server.compiler import IssuerKeys, compile_snapshot
from xds_server.jwks.source import JwksSource, jwks_sources
from xds_server.publish.locate import located_in
from xds_server.snapshot.snapshot import InconsistentSnapshotError, Resource, Snapshot
from xds_server.worker.secret_files import (
    NO_SECRET_FILES,
    SecretFileReads,
    SecretFiles,
    read_again,
)
from xds_server.worker.secret_values import read_loaded_secrets


@dataclass(frozen=True)
class CompileJob:
    path: str
    discovered: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: Skip parsing when the file's digest is still this (see CompileInput.known_digest).
    known_digest: str | None = None
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    limits: YamlLimits = DEFAULT_LIMITS
    #: Seconds a file must have been left alone before it is read (see ``read_settled``).
    settle: float = 0.0
    max_files: int = DEFAULT_MAX_CONFIG_FILES
    #: Fetched signing keys by issuer name (the JWKS manager's view; see CompileInput).
    jwks: Mapping[str, IssuerKeys] = field(default_factory=dict)
    #: With ``known_digest``: the secret files must still read as this too (see
    #: CompileInput.known_secrets).
    known_secrets: SecretFiles = NO_SECRET_FILES


#: Every path the worker looked at, with its stat signature then (None: missing), so that
#: the watcher notices a change to any of them, even one made while the worker read.
Watched = tuple[tuple[str, Signature | None], ...]

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
    watched: Watched = field(default=(), compare=False)
    #: The config's URL and file JWKS sources (no keys): what the JWKS manager must fetch.
    jwks_sources: tuple[JwksSource, ...] = ()
    #: The secret files read, and what they held (compared, never shown).
    secret_files: SecretFiles = NO_SECRET_FILES


@dataclass(frozen=True)
class Rejected:
    digest: str
    problems: tuple[Problem, ...]
    watched: Watched = field(default=(), compare=False)
    secret_files: SecretFiles = NO_SECRET_FILES


@dataclass(frozen=True)
class Unchanged:
    """The files (the config's and its secret files) still hold what they held when the
    outcome that stands was computed; nothing to do."""

    digest: str
    watched: Watched = field(default=(), compare=False)
    secret_files: SecretFiles = NO_SECRET_FILES


Outcome = Compiled | Rejected | Unchanged


def digest_of(text: str) -> str:
    """The digest of a config that is one file (``meshgate status`` shows it)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_job(job: CompileJob) -> Outcome:
    """Read, parse, validate, read the secrets it names, and compile; every failure becomes
    problems, never an exception.

    The files are read once, by the bounded reader (regular files only, at most
    ``max_bytes`` and ``max_files`` together, never blocking), and the digest is of exactly
    what is parsed. Every outcome lists the paths looked at (secret files too), for the
    watcher, and the outcome for the same content stands (``Unchanged``) only while the
    secret files read for it hold what they held."""
    started = time.perf_counter()
    files = read_config_files(
        job.path, job.max_bytes, job.limits, settle=job.settle, max_files=job.max_files
    )
    watched = files.watched
    if files.unreadable:
        return Rejected("unreadable", tuple(files.error().report()), watched)
    digest = files.digest
    if digest == job.known_digest:
        again = read_again(job.known_secrets.paths, settle=job.settle)
        if again.known() == job.known_secrets:
            return Unchanged(digest, watched + again.watched(), job.known_secrets)
    reads = SecretFileReads(settle=job.settle)
    try:
        loaded = parse_files(files)
        labels = {"source": loaded.source, "digest": digest}
        secrets = read_loaded_secrets(loaded, read_file=reads.read)
        snapshot = compile_snapshot(
            loaded.config, job.discovered, labels, jwks=job.jwks, secrets=secrets
        )
        sources = jwks_sources(loaded.config, _declaring_dir(loaded))
    except ConfigError as exc:
        return Rejected(digest, tuple(exc.report()), watched + reads.watched(), reads.known())
    except InconsistentSnapshotError as exc:
        problem = Problem(job.path, "", str(exc), origin="compiler")
        return Rejected(digest, (problem,), watched + reads.watched(), reads.known())
    except Exception as exc:  # a loader or compiler bug must still be reported, not swallowed
        message, report = bug_report(exc)
        print(report, file=sys.stderr, flush=True)  # the worker's stderr is the control plane's
        problem = Problem(job.path, "", message, origin="compiler bug")
        return Rejected(digest, (problem,), watched + reads.watched(), reads.known())
    resources = tuple(
        (r.name, r.type_url, r.any.value, r.version)
        for by_name in snapshot.resources.values()
        for r in by_name.values()
    )
    seconds = time.perf_counter() - started
    return Compiled(
        digest, resources, labels, seconds, watched + reads.watched(), sources, reads.known()
    )


def _declaring_dir(loaded: LoadedConfig) -> Callable[[int], str]:
    """Issuer index -> the directory of the file that names its ``jwks.file`` (a config may
    be split across files; a relative path is relative to its own file, as for secrets)."""
    origins = loaded.origins

    def base(index: int) -> str:
        where, _ = origins.origin(("issuers", index, "jwks", "file"))
        path = origins.files[where].path if where is not None else origins.root
        return str(Path(path).parent)

    return base


def locate_in_file(job: CompileJob, digest: str, message: str) -> list[Problem]:
    """Envoy's ``message`` traced back to the config files' paths and lines, as long as the
    files still hold the content that was compiled (``digest``); else nothing is certain and
    the message stands alone."""
    files = read_config_files(job.path, job.max_bytes, job.limits, max_files=job.max_files)
    if files.problems or files.digest != digest:
        return []
    try:
        loaded = parse_files(files)
    except ConfigError:
        return []
    return located_in(message, loaded)


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
