"""Read a config file without trusting what the path points at.

The path comes from an operator, a Helm value or a ConfigMap mount, and it may point at
anything: a FIFO (a plain ``open`` blocks until someone writes to it, freezing the control
plane's event loop), ``/dev/zero`` or ``/dev/urandom`` (endless: read them whole and memory
runs out), a directory, a socket, a file that is still being written and keeps growing. So:

- the path is ``stat``-ed first and only a regular file is opened: devices, FIFOs and sockets
  are never opened at all (opening some devices has side effects);
- it is opened with ``O_NONBLOCK`` and checked again with ``fstat`` on the descriptor we
  actually read, so a swap between the two checks cannot slip a FIFO in;
- at most ``max_bytes + 1`` bytes are read whatever ``st_size`` said (``/proc`` files report
  0; a file may grow while read), so memory is bounded by the limit;
- bytes that are not UTF-8 are reported with their offset, line and column.
- :func:`read_settled` reads a file only once nobody is writing it, and returns the
  :func:`signature` (``stat``) it had then, which the config watcher compares against.

Symlinks are followed: Kubernetes mounts every ConfigMap key as a symlink into a ``..data``
directory that it swaps atomically.

Each refusal is one :class:`~meshgate.problems.Problem` that names what the path is and why
it is refused, so ``meshgate validate``, the logs and ``meshgate status`` say the same thing.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from meshgate.problems import ConfigError, Problem

#: Default largest config file: a 100,000-route file is about 10 MiB, so 32 MiB leaves room
#: for very large configs while keeping a mistaken path (a log file, a disk image) harmless.
DEFAULT_MAX_CONFIG_BYTES = 32 * 1024 * 1024
#: How often a file that keeps changing is looked at again before what was read is used.
SETTLE_ROUNDS = 50

T = TypeVar("T")

#: What ``stat`` says of a path, to notice any change: (mtime ns, ctime ns, size, inode).
Signature = tuple[int, int, int, int]
#: How much is read per ``read`` call.
_CHUNK = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words an operator recognises."""
    for test, what in _KINDS:
        if test(mode):
            return what
    return "not a regular file"


def _refuse(path: str, message: str, line: int | None = None, col: int | None = None) -> NoReturn:
    raise ConfigError([Problem(path, "", message, line, col)])


def os_problem(exc: OSError, doing: str) -> str:
    """Why a file could not be opened or read, worded for the operator (config files,
    secret files); never the file's content."""
    if exc.errno == errno.ENOENT:
        return "file not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: cannot {doing} the file (check its owner and mode)"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop?)"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a directory"
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long"
    return f"cannot {doing} the file: {exc.strerror or exc}"


def _check_regular(path: str, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        _refuse(
            path,
            f"is {file_kind(st.st_mode)}, not a regular file; a config is read only from a "
            "regular file (or a symlink to one)",
        )
    if st.st_size > max_bytes:
        _refuse(path, _too_large(st.st_size, max_bytes))


def _too_large(size: int | str, max_bytes: int) -> str:
    return (
        f"the file is {size} bytes, more than the limit of {max_bytes} bytes "
        "(raise it with --max-config-bytes)"
    )


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line_start = data.rfind(b"\n", 0, offset) + 1
        line = data.count(b"\n", 0, offset) + 1
        # The column in characters, as a text editor counts them.
        col = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
        _refuse(
            path,
            f"not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
            f"({exc.reason}); save the file as UTF-8",
            line,
            col,
        )


def read_config_text(path: str | Path, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> str:
    """The text of the config file at ``path``; :class:`ConfigError` with one precise
    problem if it cannot or must not be read."""
    name = str(path)
    try:
        _check_regular(name, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        _refuse(name, os_problem(exc, "open"))
    except ValueError:  # an embedded NUL byte in the path
        _refuse(name, "the path contains a NUL byte")
    try:
        st = os.fstat(fd)
        _check_regular(name, st, max_bytes)
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(_CHUNK, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining <= 0:
            _refuse(
                name,
                f"more than {max_bytes} bytes could be read although the file said it was "
                f"{st.st_size} bytes (it grows, or does not report its size); the limit is "
                f"{max_bytes} bytes (raise it with --max-config-bytes)",
            )
    except OSError as exc:
        _refuse(name, os_problem(exc, "read"))
    finally:
        os.close(fd)
    return _decode(name, b"".join(chunks))


def signature(path: str) -> Signature | None:
    """The stat signature of ``path`` (following symlinks); None when it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def read_settled(path: str, max_bytes: int, settle: float) -> tuple[str, Signature | None]:
    """The file's text once nobody is writing it, and the signature it had when read.

    A file modified less than ``settle`` seconds ago is waited for, and one that changed
    while it was read is read again: an in-place write (truncate, then write) or a slow copy
    seen half-way is a shorter file, and a shorter config is often still valid (its last
    routes cut off); compiling it would publish half a config. Waiting costs nothing when the
    file is old. Bounded: a file rewritten without pause for :data:`SETTLE_ROUNDS` rounds is
    taken as last read (the compile timeout bounds it too)."""
    return settled(path, settle, lambda: read_config_text(path, max_bytes))


def settled(path: str, settle: float, read: Callable[[], T]) -> tuple[T, Signature | None]:
    """``read()`` of ``path`` once nobody is writing it, and the signature the file had then
    (see :func:`read_settled`; a secret file is read this way too). ``read`` must not raise
    for a file that is merely half-written: return what it found instead."""
    before: Signature | None = None
    for _ in range(SETTLE_ROUNDS):
        before = signature(path)
        if before is not None and settle > 0:
            age = time.time() - before[0] / 1e9
            if 0 <= age < settle or age < 0:  # fresh (or from the future: a skewed clock)
                time.sleep(min(settle - age, settle) if age >= 0 else settle)
                if signature(path) != before:
                    continue
        result = read()
        if signature(path) == before:
            return result, before
    before = signature(path)
    return read(), before
