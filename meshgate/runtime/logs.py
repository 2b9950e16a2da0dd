"""Structured JSON logs on stderr, one object per line, for every meshgate process.

JSON because these logs go to collectors (Loki, Cloud Logging, ELK) beside Envoy's JSON access
logs; extra fields passed as ``logger.info("...", extra={"fields": {...}})`` become top-level keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(JsonFormatter):
    """For a terminal: ``time level logger: message key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data = json.loads(super().format(record))
        head = f"{data.pop('time')} {data.pop('level'):<7} {data.pop('logger')}: "
        head += str(data.pop("message"))
        data.pop("service")
        exc = data.pop("exception", None)
        tail = "".join(f" {k}={v}" for k, v in data.items())
        return head + tail + (f"\n{exc}" if exc else "")


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter(service) if fmt == "text" else JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
