"""What every source (file, Consul, Kubernetes) tells the control plane: one event shape.

A source watches one thing and reports each change as an event; it never compiles, publishes
or decides what wins. :mod:`xds_server.sources.state` keeps the latest event of every source
and turns them into one compile input. So a new discovery source is one class with a ``run``
that emits these events, and nothing downstream changes.

A config event carries *where* the config is, not the parsed model: parsing a large file is
the expensive, memory-hungry step (a 100,000-route file took 566 MB), so it is done by the
compile worker process (:mod:`xds_server.worker`), and a parsed model never lives in the
control-plane process at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from meshgate.config import Endpoint
from meshgate.problems import Problem
from xds_server.compiler.context import IssuerKeys


@dataclass(frozen=True)
class ConfigChanged:
    """The gateway config at ``path`` may have changed (the worker reads it and finds out).

    ``revision`` is whatever the source uses to notice a change (a file's stat), so that two
    events about the same file are distinguishable; the content digest is only known once the
    worker has read the file.
    """

    source: str
    path: str
    revision: str = ""


@dataclass(frozen=True)
class EndpointsChanged:
    """A discovery source's complete current view: service name -> its endpoints.

    Complete, not a delta: a service missing from ``endpoints`` has no endpoints from this
    source any more. Endpoints add to the service's static ``endpoints`` in the config.
    """

    source: str
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceError:
    """A source cannot deliver (file not found, Consul unreachable, a bad annotation).

    The last good input of that source stays in use; ``problems`` say why, with provenance
    (``Problem.file`` / ``origin``); ``digest`` names what was refused (a content hash, or a
    word such as ``missing``) so that repeated reports of one failure are recognisable.
    """

    source: str
    problems: tuple[Problem, ...]
    digest: str


@dataclass(frozen=True)
class KeysChanged:
    """The JWKS manager's complete current view: issuer name -> the signing keys in force.

    Complete, like ``EndpointsChanged``: an issuer missing here has no usable keys (never
    fetched, or older than its ``max_stale``), and the compiler gives it a key set no token
    matches. Only URL and file sources appear; inline keys are in the config itself.
    """

    source: str
    keys: Mapping[str, IssuerKeys] = field(default_factory=dict)


SourceEvent = ConfigChanged | EndpointsChanged | KeysChanged | SourceError

#: How a source hands an event over. Synchronous on purpose: the state decides at once and
#: never blocks, so a source cannot be slowed down by a compile in progress.
Emit = Callable[[SourceEvent], None]


class Source(Protocol):
    """A watcher of one thing. ``run`` emits the current state first, then every change."""

    name: str

    async def run(self, emit: Emit) -> None: ...
