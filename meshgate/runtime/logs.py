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

from meshgate.runtime import log_text


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
    """For a terminal: the JSON record rendered as one readable line by
    :mod:`meshgate.runtime.log_text` (the same rendering ``meshgate up`` uses)."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self._text = log_text.TextFormatter()

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record).encode()
        return self._text.format(self.service, "log", line).decode(errors="replace").rstrip("\n")


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter(service) if fmt == "text" else JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
