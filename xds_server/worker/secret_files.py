"""The secret files a compile read, watched like the config's own files.

A secret named by ``file:`` may be rotated without touching the config (a new client secret
written in place, a Kubernetes Secret's volume swapping its ``..data`` symlink). For that to
reach Envoy, two things the config's own files already have are needed:

* the watcher looks at the file: every secret file read is reported with its stat signature,
  taken *before* it was read, beside the config's paths (``Outcome.watched``), so a change
  made while it was read is noticed on the next tick;
* "the config did not change" covers it: the compile job answers ``Unchanged`` without
  parsing only when the config's digest *and* :class:`SecretFiles` are still the same. The
  latter is the files' paths and a digest of what reading each gave (its value, or why it
  could not be read), which the job recomputes by reading those files again: a few small
  reads, no parse.

The digest is a keyed BLAKE2b (a random key per fork server): a short secret's plain hash can
be brute-forced, and the digest travels between processes. It is never logged or shown;
``repr`` leaves it out. A secret from an environment variable cannot change while the control
plane runs (its environment is fixed at start): rotating one takes a restart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshgate.files import Signature, settled
from xds_server.worker.secret_values import MAX_SECRET_BYTES, SecretReadError, read_file_secret

#: Keys the digest. Made once per process: the fork server's, inherited by every worker it
#: forks. A new fork server (the old one killed) has a new key, which costs one full compile.
_KEY = os.urandom(32)


@dataclass(frozen=True)
class SecretFiles:
    """The secret files one compile read (absolute paths, in reading order) and a digest of
    what it found in them; two compiles that read the same values compare equal."""

    paths: tuple[str, ...] = ()
    digest: str = field(default="", repr=False)


#: A compile that read no secret file.
NO_SECRET_FILES = SecretFiles()


class SecretFileReads:
    """Reads secret files for one compile and remembers what each gave."""

    def __init__(self, max_bytes: int = MAX_SECRET_BYTES, settle: float = 0.0) -> None:
        self.max_bytes = max_bytes
        #: A file changed less than this ago is waited for, as the config's own files are:
        #: ``echo new > file`` truncates first, and an empty or half-written secret must
        #: not be taken for the new one.
        self.settle = settle
        self._seen: dict[str, tuple[Signature | None, bytes]] = {}

    def read(self, path: Path) -> str:
        """The secret in ``path`` (:func:`read_file_secret`'s rules) once nobody is writing
        it, remembered with the file's signature from before the read."""
        key = str(path)
        (value, error), before = settled(key, self.settle, lambda: self._attempt(path))
        if error is not None:
            self._seen[key] = (before, b"error\0" + error.encode())
            raise SecretReadError(error)
        assert value is not None
        self._seen[key] = (before, b"value\0" + value.encode())
        return value

    def _attempt(self, path: Path) -> tuple[str | None, str | None]:
        try:
            return read_file_secret(path, self.max_bytes), None
        except SecretReadError as exc:
            return None, str(exc)

    def watched(self) -> tuple[tuple[str, Signature | None], ...]:
        """Every file read, with its signature before the read (None: it was missing)."""
        return tuple((path, sig) for path, (sig, _) in self._seen.items())

    def known(self) -> SecretFiles:
        """What was read, as compared by the next compile."""
        if not self._seen:
            return NO_SECRET_FILES
        h = hashlib.blake2b(key=_KEY, digest_size=16)
        for path, (_, outcome) in self._seen.items():
            for part in (path.encode(), outcome):
                h.update(len(part).to_bytes(8, "big"))
                h.update(part)
        return SecretFiles(tuple(self._seen), h.hexdigest())


def read_again(
    paths: Iterable[str], max_bytes: int = MAX_SECRET_BYTES, settle: float = 0.0
) -> SecretFileReads:
    """Read ``paths`` as a compile would (a failure is remembered, not raised)."""
    reads = SecretFileReads(max_bytes, settle)
    for path in paths:
        try:
            reads.read(Path(path))
        except SecretReadError:
            pass
    return reads
