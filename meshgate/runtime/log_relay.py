"""Relay children's output into ours line by line, so that lines are never spliced.

When several children write to one inherited stdout, a write larger than the pipe's atomic
size (4 KiB), or a child writing a line in two pieces, can land in the middle of another
child's line: one access-log line in ~143k came out spliced with a control-plane line. So
``meshgate up`` gives every child its own pipes and relays them here: a line is written out
only when it is whole, and every write to one of our outputs goes through that output's
:class:`Sink`, one call under one lock, so whole lines from different children (and our own
messages) follow each other but never mix.

One thread per output (stdout, stderr) reads every child's pipe for that output with a
selector: a stalled reader of our stdout (the access log) never holds up stderr. Lines pass
through unchanged (JSON) unless the stream has a formatter (text for a terminal,
:mod:`meshgate.runtime.log_text`). Unformatted output is copied in whole-line chunks with no
per-line work at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import selectors
import threading
from collections import deque
from collections.abc import Callable

#: Longest line kept whole; a child writing more without a newline gets it cut here, so one
#: runaway child cannot make the relay hold unbounded memory.
MAX_LINE = 1 << 20
#: Pipe buffer asked of the kernel: a burst of access-log lines fits while the relay is busy.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031

#: Renders one line (without its newline) into whole output line(s) ending in a newline.
LineFormat = Callable[[bytes], bytes]


class Sink:
    """One of our output descriptors, shared by every thread that writes lines to it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False
        #: Bytes that could not be written (a full disk) and were dropped.
        self.dropped = 0

    def write(self, data: bytes) -> None:
        """Write all of ``data`` before anyone else may write here. A reader that went away
        (EPIPE) is not our failure: the gateway keeps running and the output is dropped. Nor
        is a full disk (``meshgate up > access.log``): the data is dropped and later writes
        try again. Never raising matters: the relay thread must keep draining the children's
        pipes, or a child blocks on its next log line (the control plane froze that way)."""
        if not data:
            return
        with self.lock:
            view = memoryview(data)
            while view and not self.broken:
                try:
                    n = os.write(self.fd, view)
                except BlockingIOError:  # an inherited non-blocking descriptor
                    select.select([], [self.fd], [])
                    continue
                except InterruptedError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                        self.broken = True
                    else:  # ENOSPC, EDQUOT, EFBIG...: this data is lost, the next may not be
                        self.dropped += len(view)
                    return
                view = view[n:]


class _Stream:
    """One child pipe: the bytes after its last newline, and what to do with whole lines."""

    def __init__(self, fd: int, sink: Sink, fmt: LineFormat | None, tail: int) -> None:
        self.fd = fd
        self.sink = sink
        self.fmt = fmt
        self.partial = b""
        self.tail: deque[str] | None = deque(maxlen=tail) if tail else None
        self.closed = threading.Event()

    def feed(self, chunk: bytes) -> None:
        data = self.partial + chunk if self.partial else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) < MAX_LINE:
                self.partial = data
                return
            data, cut = data + b"\n", len(data)
        self.partial = data[cut + 1 :]
        self.emit(data[: cut + 1])

    def emit(self, whole: bytes) -> None:
        """Write complete lines (``whole`` ends with a newline) in one call."""
        if self.fmt is not None:
            fmt = self.fmt
            try:
                whole = b"".join([fmt(line) for line in whole[:-1].split(b"\n")])
            except Exception:  # a formatter bug must not end the relay: lines pass as written
                pass
        self.sink.write(whole)
        if self.tail is not None:
            keep = self.tail.maxlen or 0
            self.tail.extend(whole.decode(errors="replace").splitlines()[-keep:])

    def finish(self) -> None:
        if self.partial:
            self.emit(self.partial + b"\n")
            self.partial = b""
        self.closed.set()


class _Pump(threading.Thread):
    """Reads every registered pipe bound for one sink until told to close."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[_Stream] = []
        self._closing = False
        self._streams = 0

    def add(self, stream: _Stream) -> None:
        with self._lock:
            self._pending.append(stream)
        os.write(self._wake_w, b"+")

    def close(self) -> None:
        with self._lock:
            self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                stream: _Stream | None = key.data
                if stream is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    with self._lock:
                        pending, self._pending = self._pending, []
                        closing = self._closing
                    for s in pending:
                        self._selector.register(s.fd, selectors.EVENT_READ, s)
                        self._streams += 1
                    if closing and self._streams == 0:
                        return
                    continue
                try:
                    chunk = os.read(stream.fd, 65536)
                except OSError:
                    chunk = b""
                if chunk:
                    stream.feed(chunk)
                    continue
                self._selector.unregister(stream.fd)
                os.close(stream.fd)
                self._streams -= 1
                stream.finish()
                with self._lock:
                    if self._closing and self._streams == 0 and not self._pending:
                        return


class ChildLogs:
    """The relay's handle on one child's two pipes."""

    def __init__(self, stdout: _Stream, stderr: _Stream) -> None:
        self._streams = (stdout, stderr)

    def stderr_tail(self) -> list[str]:
        """The last lines the child wrote on stderr, as they were written out."""
        tail = self._streams[1].tail
        return list(tail) if tail is not None else []

    def wait_closed(self, timeout: float) -> bool:
        """Until both pipes reached end of file and their last lines were written."""
        return all(s.closed.wait(timeout) for s in self._streams)


class LogRelay:
    """Pipes for children, relayed into our ``stdout`` and ``stderr`` sinks."""

    def __init__(self, stdout: Sink, stderr: Sink, tail: int = 12) -> None:
        self.stdout, self.stderr = stdout, stderr
        self.tail = tail
        self._pumps = (_Pump("log-relay-stdout"), _Pump("log-relay-stderr"))
        for pump in self._pumps:
            pump.start()

    def attach(
        self, stdout_format: LineFormat | None, stderr_format: LineFormat | None
    ) -> tuple[int, int, ChildLogs]:
        """Two new pipes; returns the write ends for the child (close them once it is
        spawned) and the handle on what it writes."""
        ends: list[int] = []
        streams: list[_Stream] = []
        for sink, fmt, tail in (
            (self.stdout, stdout_format, 0),
            (self.stderr, stderr_format, self.tail),
        ):
            r, w = os.pipe()
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
            ends.append(w)
            streams.append(_Stream(r, sink, fmt, tail))
        for pump, stream in zip(self._pumps, streams, strict=True):
            pump.add(stream)
        return ends[0], ends[1], ChildLogs(streams[0], streams[1])

    def close(self, timeout: float = 2.0) -> None:
        """Stop once every pipe is at end of file (the children are gone), or after
        ``timeout`` seconds (a grandchild might hold a pipe open)."""
        for pump in self._pumps:
            pump.close()
        for pump in self._pumps:
            pump.join(timeout)
