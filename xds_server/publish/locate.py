"""Trace a rejection only Envoy finds back to the config line that caused it.

Envoy's objections speak of *its* resources: "Error adding/updating listener(s) public: ...",
"Error adding/updating cluster(s) orders: ...", or (for a route table) just the reason, such
as RE2's "invalid repetition size: {1001}". The compiler names those resources after the
config (a listener and its route configuration after ``listeners[i].name``, a cluster and its
endpoints after ``services[j].name``, an Envoy route after ``route_name``), so most messages
can be mapped back:

1. the resources the message names (Envoy's "listener(s) a:" / "cluster(s) a:" forms, or the
   canary's "Envoy rejected RDS 'a':") give the listener or service;
2. a quoted route or virtual host name, or a fragment of a regular expression the config
   holds (RE2 quotes the offending part), narrows that down to one route or one value.

Only what is certain is reported: a name that matches nothing gives no location, and the
problem then says only what Envoy said. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from meshgate.config import GatewayConfig, route_name
from meshgate.loader import LoadedConfig, Loc, format_loc, position
from meshgate.problems import Problem

#: "Envoy rejected RDS 'public', 'admin': reason" (the canary's wording, validation.py).
_CANARY = re.compile(r"^Envoy rejected (CDS|EDS|LDS|RDS)((?: '[^']+',?)*): ")
#: "Error adding/updating listener(s) a: reason; b: reason" (Envoy's LDS and CDS wording).
_ENVOY = re.compile(r"Error adding/updating (listener|cluster)\(s\) ")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
#: Fields holding regular expressions (RE2 in Envoy), by their last path element.
_REGEX_KEYS = frozenset({"regex", "pattern", "allow_origin_regex"})
#: The canary's resource types by what their names stand for in the config.
_LISTENER_TYPES = frozenset({"LDS", "RDS"})


@dataclass(frozen=True)
class _Named:
    kind: str  # listener, service, virtual host, route
    name: str
    loc: Loc
    listener: int | None  # the listener it belongs to (routes, virtual hosts)


def _named(config: GatewayConfig) -> list[_Named]:
    out = [_Named("service", s.name, ("services", j), None) for j, s in enumerate(config.services)]
    for i, listener in enumerate(config.listeners):
        out.append(_Named("listener", listener.name, ("listeners", i), i))
        for j, vhost in enumerate(listener.virtual_hosts):
            vloc: Loc = ("listeners", i, "virtual_hosts", j)
            out.append(_Named("virtual host", vhost.name, vloc, i))
            for k, route in enumerate(vhost.routes):
                rname = route_name(vhost, k, route)
                out.append(_Named("route", rname, (*vloc, "routes", k), i))
    return out


def _regexes(data: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """Every regular expression the config file spells out, with its path."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in _REGEX_KEYS and isinstance(value, str):
                yield (*loc, key), value
            elif key in _REGEX_KEYS and isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, str):
                        yield (*loc, key, i), item
            else:
                yield from _regexes(value, (*loc, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _regexes(item, (*loc, i))


def _named_resources(message: str, named: list[_Named]) -> tuple[list[_Named], str]:
    """The listeners/services the message names as Envoy resources, and the rest of it."""
    canary = _CANARY.match(message)
    if canary:
        kind = "listener" if canary.group(1) in _LISTENER_TYPES else "service"
        names = set(re.findall(r"'([^']+)'", canary.group(2) or ""))
        found = [n for n in named if n.kind == kind and n.name in names]
        return found, message[canary.end() :]
    envoy = _ENVOY.search(message)
    if envoy:
        kind = "listener" if envoy.group(1) == "listener" else "service"
        body = message[envoy.end() :]
        found = [
            n
            for n in named
            if n.kind == kind and re.search(rf"(?:^|; |, ){re.escape(n.name)}: ", body)
        ]
        return found, body
    return [], message


def trace(message: str, config: GatewayConfig) -> list[Loc]:
    """Where in ``config`` Envoy's ``message`` points: the most precise places that can be
    told for certain (a regex value, a route, a virtual host, a listener or a service)."""
    named = _named(config)
    resources, rest = _named_resources(message, named)
    listeners = {n.listener for n in resources if n.kind == "listener"}

    def in_scope(listener: int | None) -> bool:
        return not listeners or listener in listeners

    quoted = {a or b for a, b in _QUOTED.findall(rest)}
    finer = [
        n.loc
        for n in named
        if n.kind in ("route", "virtual host") and n.name in quoted and in_scope(n.listener)
    ]
    tail = rest.rsplit(": ", 1)[-1].strip()
    if len(tail) >= 2 and not any(n.kind == "service" for n in resources):
        data = config.model_dump(exclude_unset=True)
        for loc, pattern in _regexes(data):
            listener = loc[1] if loc[:1] == ("listeners",) and isinstance(loc[1], int) else None
            if (tail in pattern or f"'{pattern}'" in rest) and in_scope(listener):
                finer.append(loc)
    if finer:
        return finer
    return [n.loc for n in resources]


def located_in(message: str, loaded: LoadedConfig) -> list[Problem]:
    """``message`` as problems at each place :func:`trace` finds, in the file that wrote it
    (a config may be split across files), with its line and column."""
    return loaded.problems_at([(loc, message) for loc in trace(message, loaded.config)])


def located_problems(
    message: str, config: GatewayConfig, source: str, text: str | None
) -> list[Problem]:
    """``message`` as problems at each place :func:`trace` finds (with the line and column
    when the file's ``text`` is at hand); empty when it points nowhere certain."""
    problems = []
    for loc in trace(message, config):
        line, column = position(text, loc) if text is not None else (None, None)
        problems.append(Problem(source, format_loc(loc), message, line, column))
    return problems
