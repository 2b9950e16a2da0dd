"""Watch the config (a file, or a directory of files) and say when it may have changed.

Polling (default every 200 ms) instead of inotify: it works the same on bind mounts, Kubernetes
ConfigMap symlink swaps and editors that replace the file, and costs one ``stat`` per path
per tick.

The watcher does not read the files. Reading, parsing and validating happen in the compile
worker (:mod:`xds_server.worker`), so that a 50 MB file or a 100,000-route config never blocks
the control plane's event loop nor stays in its memory. The worker also recognises a touched
but unchanged config by its content digest and publishes nothing then.

Which paths to watch follows from what the worker read: the config path itself, and, once a
compile reports them (:meth:`FileConfigSource.track`), every file of the config, every
directory listed (a config directory, the directory of an include pattern, where a file
added or removed changes the directory's own stat), every include that named a missing
file, and every secret file the compile read (a rotated secret reaches Envoy without an edit
of the config; see :mod:`xds_server.worker.secret_files`). Each comes with the signature
it had when the worker read it, so a file edited while the worker was reading is noticed on
the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from meshgate.files import Signature, signature
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
        #: the config's other paths, with the signature each had when last read
        self._tracked: dict[str, Signature | None] = {}

    def track(self, watched: Iterable[tuple[str, Signature | None]]) -> None:
        """Watch these paths from now on, as the compile that read them saw them."""
        root = str(self.path)
        self._tracked = {path: sig for path, sig in watched if path != root}

    def _moved(self) -> list[str]:
        """The tracked paths whose signature is not the one they had when read; those are
        taken as read again (the compile about to start will report them anyway)."""
        moved = []
        for path, seen in self._tracked.items():
            now = signature(path)
            if now != seen:
                self._tracked[path] = now
                moved.append(path)
        return moved

    def check_once(self, emit: Emit) -> None:
        """One look at the config: emit when a stat changed or the path cannot be found."""
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
        moved = self._moved()
        if key == self._last_stat and not moved:
            return
        self._last_stat = key
        self._error = None
        revision = ":".join(map(str, key))
        if moved:
            revision += f"+{len(moved)}:" + ":".join(map(str, signature(moved[0]) or ()))
        emit(ConfigChanged(self.name, str(self.path), revision=revision))

    async def run(self, emit: Emit) -> None:
        while True:
            try:
                self.check_once(emit)
            except Exception:
                log.exception("config watch failed; retrying")
            await asyncio.sleep(self.interval)
