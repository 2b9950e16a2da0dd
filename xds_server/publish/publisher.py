"""Last good config wins: a candidate is published only once it is known good.

The publisher is the one place that decides whether a compiled snapshot reaches the fleet. A
config change (anything beyond endpoints) is first judged by Envoy itself through a validator;
a rejected candidate is recorded with its reasons (shown by ``meshgate status``, logged, counted)
and the snapshot that works keeps serving. Endpoint-only changes skip validation: they cannot
make Envoy reject anything and must be fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from meshgate.problems import Problem, bounded
from meshgate.redact import redact_text
from xds_server.metrics import XdsMetrics
from xds_server.publish.validation import Validator
from xds_server.snapshot.cache import DEFAULT_GROUP, SnapshotCache
from xds_server.snapshot.snapshot import Snapshot

log = logging.getLogger("meshgate.publisher")


@dataclass
class ConfigState:
    """What ``meshgate status`` shows about config: what is published, and what was rejected.

    "Published" is what the control plane offers the fleet; whether each Envoy accepted it is
    the status registry's to say (an Envoy may refuse it for a reason of its own host).
    """

    source: str = ""
    version: str = ""
    config_digest: str = ""
    published_at: float | None = None
    #: Problems of the most recent attempt; empty once the latest file is the published one.
    errors: list[dict[str, Any]] = field(default_factory=list)
    rejected_digest: str = ""
    rejected_at: float | None = None

    def clear_rejection(self) -> None:
        self.errors, self.rejected_digest, self.rejected_at = [], "", None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "version": self.version or None,
            "config_digest": self.config_digest or None,
            "published_at": self.published_at,
            "errors": self.errors,
            "rejected_digest": self.rejected_digest or None,
            "rejected_at": self.rejected_at,
        }


#: Turns one validator objection into problems located in the config (path, line), where
#: Envoy's text can be traced back to it; see :mod:`xds_server.publish.locate`. Asynchronous:
#: it needs the parsed config, which only the compile worker has (it runs in a worker too).
Locator = Callable[[str], Awaitable[list[Problem]]]


class Publisher:
    def __init__(
        self,
        cache: SnapshotCache,
        validator: Validator | None,
        metrics: XdsMetrics,
        source: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.validator = validator
        self.metrics = metrics
        self.clock = clock
        self.state = ConfigState(source=source)

    @property
    def current(self) -> Snapshot | None:
        return self.cache.get_snapshot(DEFAULT_GROUP)

    @property
    def accepted(self) -> bool:
        """A config is published and the latest one seen is it (no rejection outstanding)."""
        return not self.state.errors and self.current is not None

    def reject(self, problems: Sequence[Problem], digest: str) -> None:
        """Record why a candidate cannot be used; the serving snapshot is untouched."""
        problems = [replace(p, message=redact_text(p.message)) for p in bounded(problems)]
        self.state.errors = [p.as_dict() for p in problems]
        self.state.rejected_digest = digest
        self.state.rejected_at = self.clock()
        self.metrics.reloads.labels("rejected").inc()
        for p in problems:
            log.error(
                "config rejected; the last good config keeps serving",
                extra={
                    "fields": {
                        **p.as_dict(),
                        "digest": digest,
                        "serving": self.state.version or None,
                    }
                },
            )

    async def offer(self, snapshot: Snapshot, digest: str, locate: Locator | None = None) -> bool:
        """Publish ``snapshot`` unless the validator objects. A file that compiles to the
        published snapshot (the serving config restored after a mistake) clears any rejection.
        """
        current = self.current
        if current is not None and current.version == snapshot.version:
            if self.state.errors:
                log.info(
                    "config is the published one again; earlier rejection cleared",
                    extra={"fields": {"version": snapshot.version, "digest": digest}},
                )
            self.state.clear_rejection()
            self.state.config_digest = digest
            self.metrics.reloads.labels("unchanged").inc()
            return True
        if not snapshot.differs_only_in_endpoints(current):
            objections = await self._validate(snapshot)
            if objections:
                origin = f"{self.validator.name} validator" if self.validator else "validator"
                problems: list[Problem] = []
                for message in objections:
                    located = await locate(message) if locate is not None else []
                    problems += [replace(p, origin=origin) for p in located] or [
                        Problem(self.state.source, "", message, origin=origin)
                    ]
                self.reject(problems, digest)
                return False
        self._publish(snapshot, "published", digest=digest)
        self.state.config_digest = digest
        self.state.clear_rejection()
        return True

    async def amend(self, snapshot: Snapshot, what: str) -> bool:
        """Publish a change the control plane made to the published snapshot itself (new
        signing keys while the config is rejected), judged by the validator like a config.
        The config's state stays: its digest, and the rejection of the file on disk, which
        this does not fix. An objection is logged, not recorded as the config's problem."""
        current = self.current
        if current is not None and current.version == snapshot.version:
            return True
        objections = await self._validate(snapshot)
        if objections:
            self.metrics.reloads.labels("amend_refused").inc()
            for message in objections:
                log.error(
                    "a change to the published snapshot was refused; it keeps serving as it is",
                    extra={"fields": {"change": what, "reason": redact_text(message)}},
                )
            return False
        self._publish(snapshot, "amended", change=what)
        return True

    async def _validate(self, snapshot: Snapshot) -> list[str]:
        if self.validator is None:
            return []
        started = time.perf_counter()
        objections = await self.validator.validate(snapshot)
        self.metrics.validate_seconds.observe(time.perf_counter() - started)
        return list(objections)

    def _publish(self, snapshot: Snapshot, result: str, **fields: str) -> None:
        self.cache.set_snapshot(DEFAULT_GROUP, snapshot)
        self.state.version = snapshot.version
        self.state.published_at = self.clock()
        self.metrics.reloads.labels(result).inc()
        self.metrics.published_at.set(self.state.published_at)
        log.info(
            "snapshot published",
            extra={
                "fields": {
                    "version": snapshot.version,
                    **fields,
                    "validated_by": getattr(self.validator, "name", None),
                }
            },
        )
