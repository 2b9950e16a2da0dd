"""One record for "something is wrong", whoever finds it, with where it came from.

The loader (a file:line:col), the publisher (Envoy's NACK of a resource type), and later the
discovery sources (a Consul service's meta key, a Kubernetes annotation) all report the same
:class:`Problem`, so ``meshgate status``, the logs and the metrics show every mistake the same
way and an operator never has to learn a second format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One mistake and its provenance.

    ``file``/``line``/``column`` locate it in a config file; ``origin`` names any other source
    (``"Envoy NACK of RDS"``, ``"Consul service api meta key meshgate.route"``); ``path`` is the
    place inside the config (``listeners[0].virtual_hosts[0].routes[3].service``).
    """

    file: str
    path: str
    message: str
    line: int | None = None
    column: int | None = None
    origin: str = ""

    @property
    def where(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        if self.origin:
            where = f"{where} ({self.origin})" if where else self.origin
        return where

    def __str__(self) -> str:
        where = self.where
        body = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {body}" if where else body

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "origin": self.origin or None,
        }


#: The loader's name for it; kept because every config error is a Problem of a file.
ConfigProblem = Problem


#: At most this many problems are kept and shown for one config; the rest are counted. A
#: file with an error repeated by YAML aliases once produced 597,871 lines; nobody reads past
#: the first screen, and the fix for the first few usually fixes the rest.
MAX_PROBLEMS = 100


def more_problems(omitted: int) -> str:
    """The closing line of a cut list."""
    return f"... and {omitted} more problem{'s' if omitted != 1 else ''}"


def bounded(problems: Sequence[Problem]) -> list[Problem]:
    """At most :data:`MAX_PROBLEMS` problems and a closing "... and N more problems" line.

    A list that is already cut that way (``ConfigError.report()``) passes unchanged.
    """
    if len(problems) <= MAX_PROBLEMS + 1:
        return list(problems)
    return ConfigError(problems).report()


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists the reasons found.

    At most :data:`MAX_PROBLEMS` are kept; ``omitted`` counts the others (whoever builds the
    list can pass a cut list and the true count, to avoid building problems nobody sees).
    """

    def __init__(self, problems: Sequence[Problem], omitted: int = 0) -> None:
        kept = list(problems[:MAX_PROBLEMS])
        self.problems = kept
        self.omitted = omitted + len(problems) - len(kept)
        super().__init__("\n".join(str(p) for p in self.report()))

    def report(self) -> list[Problem]:
        """The problems as shown everywhere: the kept ones, then "... and N more problems"."""
        if not self.omitted:
            return list(self.problems)
        source = self.problems[-1].file if self.problems else ""
        return [*self.problems, Problem(source, "", more_problems(self.omitted))]
