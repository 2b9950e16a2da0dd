"""Temporary directories that are cleaned up even when their owner is killed with SIGKILL.

An Envoy started by meshgate needs a directory for its bootstrap. Its owner removes it on a
clean stop, but a ``kill -9`` of the owner (``meshgate up``, or a control plane with its
canary Envoy) runs no cleanup at all, and such directories used to pile up in /tmp.

So each directory holds a lock file that its owner keeps ``flock``-ed while it uses the
directory. The kernel drops the lock when the owner dies, however it dies, so "lock free"
means "owner gone": creating a directory sweeps its siblings whose lock is free. A directory
without a lock file (made by an older meshgate, which may still be running) is left alone.

A directory is prepared under a hidden name and renamed into place with its lock already
held, so a sweeper never sees a fresh directory before its owner has locked it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK_NAME = ".owner.lock"

#: Lock descriptors this process holds; closed in forked children that do not exec, so a
#: worker forked from an owner never keeps its directory "alive" after the owner died.
_held: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _default_root() -> Path:
    return Path(tempfile.gettempdir())


def sweep_abandoned(family: str, root: Path | None = None) -> list[Path]:
    """Remove the ``root/<family>*`` directories whose owner is dead; returns them."""
    removed: list[Path] = []
    for path in (root or _default_root()).glob(f"{family}*"):
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # no lock file (older meshgate, or not ours), or not readable
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # the owner holds it: in use
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


class OwnedDir:
    """A fresh ``<root>/<family><name>-XXXXXXXX`` directory locked by this process until
    :meth:`remove`; creating one first sweeps the abandoned siblings of its family."""

    def __init__(self, family: str, name: str = "", root: Path | None = None) -> None:
        base = root or _default_root()
        sweep_abandoned(family, base)
        staging = Path(tempfile.mkdtemp(prefix=f".{family}{name}-", dir=base))
        self._fd: int | None = os.open(
            staging / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        _held.add(self._fd)
        self.path = base / staging.name[1:]
        os.rename(staging, self.path)

    def remove(self) -> None:
        """Delete the directory, then let go of it (idempotent)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            _held.discard(self._fd)
            os.close(self._fd)
            self._fd = None
