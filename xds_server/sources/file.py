"""Watch a config file and say when it may have changed.

Polling (default every 200 ms) instead of inotify: it works the same on bind mounts, Kubernetes
ConfigMap symlink swaps and editors that replace the file, and costs one ``stat`` per tick.

The watcher does not read the file. Reading, parsing and validating happen in the compile
worker (:mod:`xds_server.worker`), so that a 50 MB file or a 100,000-route config never blocks
the control plane's event loop nor stays in its memory. The worker also recognises a touched
but unchanged file by its content digest and publishes nothing then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from meshgate.problems import Problem
from xds_server.sources.base import ConfigChanged, Emit, SourceError

log = logging.getLogger("meshgate.source.file")


class FileConfigSource:
    def __init__(self, path: str | Path, interval: float = 0.2) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.interval = interval
        self._last_stat: tuple[int, int, int, int] | None = None
        self._error: str | None = None

    def check_once(self, emit: Emit) -> None:
        """One look at the file: emit when its stat changed or it cannot be found."""
        try:
            st = os.stat(self.path)
        except OSError as exc:  # gone, or a directory on the way is not searchable
            missing = isinstance(exc, FileNotFoundError)
            digest = "missing" if missing else "unreachable"
            if self._error != digest:
                self._error = digest
                self._last_stat = None
                reason = "file not found" if missing else f"cannot read file: {exc}"
                emit(SourceError(self.name, (Problem(str(self.path), "", reason),), digest))
            return
        # ctime too: a chmod that makes an unreadable file readable changes only that
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        if key == self._last_stat:
            return
        self._last_stat = key
        self._error = None
        emit(ConfigChanged(self.name, str(self.path), revision=":".join(map(str, key))))

    async def run(self, emit: Emit) -> None:
        while True:
            try:
                self.check_once(emit)
            except Exception:
                log.exception("config watch failed; retrying")
            await asyncio.sleep(self.interval)
