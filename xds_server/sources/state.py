"""The latest word of every source, merged into one compile input: a pure state holder.

Sources report independently (the file when it is edited, Consul or Kubernetes when endpoints
move); the compiler needs one input: the config and every discovered endpoint. This module
keeps the latest event of each source and says, for each new event, whether a recompile is
due and with what. It does no I/O and never waits, so it is tested without processes, and
whatever runs the compile (the worker, :mod:`xds_server.worker`) stays unaware of sources.

Each input has a ``generation``: a newer input supersedes an older one still compiling, and an
outcome is only "settled" for the generation it was computed from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshgate.config import Endpoint
from xds_server.compiler.context import IssuerKeys
from xds_server.sources.base import (
    ConfigChanged,
    EndpointsChanged,
    KeysChanged,
    SourceError,
    SourceEvent,
)
from xds_server.worker.secret_files import NO_SECRET_FILES, SecretFiles


@dataclass(frozen=True)
class CompileInput:
    """Everything one compile needs, as of ``generation``."""

    generation: int
    config: ConfigChanged
    discovered: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: The worker may answer "unchanged" without parsing when the file's content still has
    #: this digest: the outcome for that content (published or rejected) still stands and the
    #: endpoints did not change since. None: compile in full.
    known_digest: str | None = None
    #: Fetched signing keys by issuer name (the JWKS manager's latest view).
    jwks: Mapping[str, IssuerKeys] = field(default_factory=dict)
    #: With ``known_digest``: the secret files that outcome read, and what they held. The
    #: worker answers "unchanged" only if they still hold it (a rotated secret file is a
    #: change even though the config is not).
    known_secrets: SecretFiles = NO_SECRET_FILES


def merge_endpoints(
    by_source: Mapping[str, EndpointsChanged],
) -> dict[str, tuple[Endpoint, ...]]:
    """service -> endpoints of every source, in source-name order, each endpoint once.

    Sorted so that every control-plane replica fed the same events computes the same input,
    and so the same snapshot versions.
    """
    merged: dict[str, list[Endpoint]] = {}
    for source in sorted(by_source):
        for service, endpoints in by_source[source].endpoints.items():
            bucket = merged.setdefault(service, [])
            bucket.extend(ep for ep in endpoints if ep not in bucket)
    return {service: tuple(merged[service]) for service in sorted(merged)}


class SourceState:
    """Holds the latest event of each source; ``apply`` says when to recompile."""

    def __init__(self) -> None:
        self.config: ConfigChanged | None = None
        self.endpoints: dict[str, EndpointsChanged] = {}
        #: The JWKS manager's latest view (it is the only source of keys).
        self.keys: dict[str, IssuerKeys] = {}
        #: Sources that currently cannot deliver, by source name.
        self.errors: dict[str, SourceError] = {}
        self.generation = 0
        self._settled_digest: str | None = None
        self._settled_secrets = NO_SECRET_FILES

    def apply(self, event: SourceEvent) -> CompileInput | None:
        """Record ``event``; return the input to compile now, or None when nothing changed."""
        if isinstance(event, SourceError):
            self.errors[event.source] = event
            if self.config is not None and event.source == self.config.source:
                # whatever the file holds when it is back must be compiled and reported,
                # even if it is the same content as before
                self._settled_digest = None
            return None
        self.errors.pop(event.source, None)
        if isinstance(event, EndpointsChanged):
            if self.endpoints.get(event.source) == event:
                return None
            self.endpoints[event.source] = event
            self._settled_digest = None  # same file, new endpoints: compile in full
        elif isinstance(event, KeysChanged):
            if self.keys == dict(event.keys):
                return None
            self.keys = dict(event.keys)
            self._settled_digest = None  # same file, new keys: compile in full
        else:
            self.config = event
        self.generation += 1
        return self.current()

    def current(self) -> CompileInput | None:
        """The input as of now (None before any config is known)."""
        if self.config is None:
            return None
        return CompileInput(
            self.generation,
            self.config,
            merge_endpoints(self.endpoints),
            self._settled_digest,
            jwks={issuer: self.keys[issuer] for issuer in sorted(self.keys)},
            known_secrets=self._settled_secrets if self._settled_digest else NO_SECRET_FILES,
        )

    def settle(
        self, generation: int, digest: str | None, secrets: SecretFiles = NO_SECRET_FILES
    ) -> None:
        """The outcome of ``generation`` (published, unchanged or rejected) has been acted on;
        it was computed from the config files with ``digest`` and the secret files ``secrets``.

        An outcome of an older generation is ignored: a newer input is on its way.
        """
        if generation == self.generation:
            self._settled_digest = digest
            self._settled_secrets = secrets
