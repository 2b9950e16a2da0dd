"""Watch a config file and hand each new valid version to the control plane.

Polling (default every 200 ms) instead of inotify: it works the same on bind mounts, Kubernetes
ConfigMap symlink swaps and editors that replace the file, and costs one ``stat`` per tick.
A change is recognised by content digest, so touching a file without changing it does nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from meshgate.files import DEFAULT_MAX_CONFIG_BYTES, read_config_text
from meshgate.loader import ConfigError, ConfigProblem, LoadedConfig, parse_config
from meshgate.runtime.gc_pause import gc_paused

log = logging.getLogger("meshgate.source.file")


class FileConfigSource:
    def __init__(
        self,
        path: str | Path,
        on_config: Callable[[LoadedConfig], Awaitable[None]],
        on_error: Callable[[ConfigError, str], None],
        interval: float = 0.2,
        max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    ) -> None:
        self.path = Path(path)
        self.on_config = on_config
        self.on_error = on_error
        self.interval = interval
        self.max_bytes = max_bytes
        self._last_stat: tuple[int, int, int, int] | None = None
        self._last_digest: str | None = None

    async def check_once(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._last_digest != "missing":
                self._last_digest = "missing"
                self._last_stat = None
                self.on_error(
                    ConfigError([ConfigProblem(str(self.path), "", "file not found")]), "missing"
                )
            return
        # ctime too: a chmod that makes an unreadable file readable changes only that
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        if key == self._last_stat:
            return
        self._last_stat = key
        try:
            # Regular files only, bounded, never blocking (a FIFO, /dev/zero): meshgate.files
            text = read_config_text(self.path, self.max_bytes)
        except ConfigError as err:
            # Forget the last digest (as for a missing file), so that restoring the very
            # config that serves is seen as a change and clears this rejection.
            self._last_digest = "unreadable"
            self.on_error(err, "unreadable")
            return
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        if digest == self._last_digest:
            return
        self._last_digest = digest
        try:
            with gc_paused():
                loaded = parse_config(text, str(self.path))
        except ConfigError as exc:
            self.on_error(exc, digest)
            return
        except Exception as exc:  # a loader bug must still be reported, not swallowed
            log.exception("config could not be loaded")
            problem = ConfigProblem(str(self.path), "", f"cannot load the file: {exc!r}")
            self.on_error(ConfigError([problem]), digest)
            return
        await self.on_config(loaded)

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("config watch failed; retrying")
            await asyncio.sleep(self.interval)
