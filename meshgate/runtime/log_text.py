"""Readable one-line renderings of the JSON lines meshgate's processes write, for a terminal.

Every meshgate process logs JSON (``time``, ``level``, ``service``, ``logger``, ``message``
and fields; :mod:`meshgate.runtime.logs`), Envoy under ``meshgate up`` logs its own lines in
the same shape, and Envoy's access log is one JSON object per request. That is right for
collectors and wrong for a person watching ``meshgate up``, so on a terminal each line is
rendered as, for example::

    12:00:01 control-plane INFO  snapshot published version=b7770d67 validated_by=canary
    12:00:01 access        GET /api/hello 200 3ms echo-a
    12:00:02 envoy         WARN  gRPC config stream to meshgate_xds closed: 14, ...

Pure: a line in, a line out; the clock and the time zone are parameters. It runs for every
access-log line, so the work per line is one ``json.loads`` and a string join; time stamps
are converted once per distinct second.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from meshgate.redact import escape

Kind = Literal["log", "access"]

_LEVELS = {
    "trace": "TRACE",
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARN",
    "warn": "WARN",
    "error": "ERROR",
    "critical": "CRIT",
}
_STANDARD = frozenset(("time", "level", "service", "logger", "message", "exception"))
_RED, _YELLOW, _DIM, _RESET = "\033[31m", "\033[33m", "\033[2m", "\033[0m"
_LEVEL_COLOR = {"WARN": _YELLOW, "ERROR": _RED, "CRIT": _RED, "DEBUG": _DIM, "TRACE": _DIM}


def _value(v: Any) -> str:
    """A field value as it reads best after ``key=``: bare when unambiguous, else JSON."""
    if isinstance(v, str):
        if v and v.isprintable() and not any(c in v for c in ' "='):
            return v
        return json.dumps(v)  # escapes control characters
    return json.dumps(v, separators=(",", ":"), default=str)


class TextFormatter:
    """Renders lines of one output stream; ``color`` for a terminal that shows ANSI colors.
    ``fields=False`` leaves out ``key=value`` fields (for messages that already say them in
    words); list fields such as a stderr tail are shown either way."""

    def __init__(
        self,
        color: bool = False,
        localtime: Callable[[float], time.struct_time] = time.localtime,
        now: Callable[[], float] = time.time,
        label_width: int = 13,
        fields: bool = True,
    ) -> None:
        self.color = color
        self.fields = fields
        self.localtime = localtime
        self.now = now
        self.label_width = label_width
        self._clocks: dict[str, str] = {}

    def format(self, label: str, kind: Kind, line: bytes) -> bytes:
        """One input line (without its newline) from the child labelled ``label``; ``kind``
        says whether it is an access-log line. Returns whole output line(s), newline ended.
        Anything that is not a JSON object is shown as it is, after the time and label."""
        record: Any = None
        if line.startswith(b"{"):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # deep nesting: json recurses per level
                record = None
        if not isinstance(record, dict):
            text = escape(line.decode(errors="replace").rstrip("\r"))
            return f"{self._clock(None)} {label:<{self.label_width}} {text}\n".encode()
        if kind == "access":
            return self._access(record)
        return self._log(label, record)

    def _clock(self, ts: Any) -> str:
        """``HH:MM:SS`` local time of an ISO-8601 UTC stamp (``2026-11-26T17:24:43.248Z``);
        now for a line without one."""
        if not isinstance(ts, str) or len(ts) < 19:
            return time.strftime("%H:%M:%S", self.localtime(self.now()))
        key = ts[:19]
        clock = self._clocks.get(key)
        if clock is None:
            try:
                epoch = calendar.timegm(time.strptime(key, "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                return time.strftime("%H:%M:%S", self.localtime(self.now()))
            if len(self._clocks) > 256:
                self._clocks.clear()
            clock = self._clocks[key] = time.strftime("%H:%M:%S", self.localtime(epoch))
        return clock

    def _paint(self, text: str, color: str | None) -> str:
        return f"{color}{text}{_RESET}" if self.color and color else text

    def _log(self, label: str, r: dict[str, Any]) -> bytes:
        level = str(r.get("level", "info"))
        name = _LEVELS.get(level.lower(), escape(level.upper()[:5]))
        parts = [
            self._clock(r.get("time")),
            f"{label:<{self.label_width}}",
            self._paint(f"{name:<5}", _LEVEL_COLOR.get(name)),
            escape(str(r.get("message", ""))),
        ]
        extra: list[str] = []
        for key, v in r.items():
            if key in _STANDARD:
                continue
            if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                extra += [
                    f"    | {escape(x)}" for x in v
                ]  # e.g. the last lines of a child's stderr
            elif self.fields:
                parts.append(f"{key}={_value(v)}")
        exc = r.get("exception")
        if isinstance(exc, str):
            extra += ["    " + escape(x) for x in exc.splitlines()]
        return ("\n".join([" ".join(parts), *extra]) + "\n").encode()

    def _access(self, r: dict[str, Any]) -> bytes:
        status = r.get("status")
        color = None
        if isinstance(status, int):
            color = _RED if status >= 500 else _YELLOW if status >= 400 else None
        parts = [
            self._clock(r.get("time")),
            f"{'access':<{self.label_width}}",
            escape(str(r.get("method") or "-")),
            escape(str(r.get("path") or "-")),
            self._paint(str(status if status is not None else "-"), color),
            escape(f"{r.get('duration_ms', '-')}ms"),
        ]
        if r.get("upstream_cluster"):
            parts.append(escape(str(r["upstream_cluster"])))
        if r.get("variant"):
            parts.append(f"variant={_value(r['variant'])}")
        flags = r.get("flags")
        if flags and flags != "-":
            parts.append(escape(str(flags)))
        details = r.get("details")
        if details and details not in ("via_upstream", "-"):
            parts.append(f"({escape(str(details))})")
        return (" ".join(parts) + "\n").encode()
