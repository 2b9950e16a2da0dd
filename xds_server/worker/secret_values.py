"""Read the secrets a config names (``SecretRef``: an environment variable or a file).

The compiler is pure, so the values are read here, by the compile job, and handed to it as
``ctx.secrets`` (keyed by :meth:`SecretRef.key() <meshgate.config.identity.SecretRef.key>`);
features turn them into SDS resources (:mod:`xds_server.compiler.secrets`).

Rules, the same for the control plane, ``meshgate validate`` and ``meshgate render``:

* ``env: NAME``: the control plane's environment variable; unset or empty is a problem.
* ``file: PATH``: a relative path is relative to the directory of the config file; only a
  regular file (or a symlink to one: Kubernetes mounts Secrets that way) is read, never a
  FIFO or a device, at most :data:`MAX_SECRET_BYTES`; one trailing newline (``\\n`` or
  ``\\r\\n``, what ``echo`` and editors add) is removed; the rest must be UTF-8 and not empty.

Whatever goes wrong is a :class:`~meshgate.problems.Problem` at the ``env``/``file`` key of
the ``SecretRef`` (file:line:col), so the config is rejected and the last good one keeps
serving. No message ever quotes a value: only the variable's name or the file's path, and
what is wrong with it.
"""

from __future__ import annotations

import os
import stat
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from meshgate.config import GatewayConfig
from meshgate.config.identity import SecretRef
from meshgate.files import file_kind, os_problem
from meshgate.loader import LoadedConfig
from meshgate.problems import ConfigError
from meshgate.redact import show
from meshgate.yaml_locate import Loc, positions
from meshgate.yaml_read import problem

#: Largest secret file: a client secret or HMAC key is tens of bytes; a PEM bundle a few kB.
MAX_SECRET_BYTES = 64 * 1024
#: Longest path quoted in a message (in full: it says where the secret was looked for).
MAX_PATH_SHOWN = 400


#: Reads the secret file at a path (raising :class:`SecretReadError`).
ReadFile = Callable[[Path], str]


class SecretReadError(Exception):
    """Why one secret could not be read; the message never holds the value."""


def secret_refs(config: GatewayConfig) -> Iterator[tuple[Loc, SecretRef]]:
    """Every ``SecretRef`` in the config with its place (``logins[0].client_secret``).

    Only fields whose type can hold a ``SecretRef`` are descended (decided once per model
    class from its annotations), so 100,000 routes cost nothing here."""
    yield from _refs(config, ())


def _refs(value: Any, loc: Loc) -> Iterator[tuple[Loc, SecretRef]]:
    if isinstance(value, SecretRef):
        yield loc, value
    elif isinstance(value, BaseModel):
        for name in _secret_fields(type(value)):
            child = getattr(value, name)
            if child is not None:
                yield from _refs(child, (*loc, name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _refs(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _refs(item, (*loc, key))


@cache
def _secret_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` whose declared type can contain a ``SecretRef``."""
    return tuple(
        name
        for name, info in model.model_fields.items()
        if _can_hold(info.annotation, frozenset({model}))
    )


def _can_hold(annotation: Any, seen: frozenset[type]) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, SecretRef):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        return any(
            _can_hold(info.annotation, seen | {annotation})
            for info in annotation.model_fields.values()
        )
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _can_hold(typing.get_args(annotation)[0], seen)
    if origin is not None or isinstance(annotation, types.UnionType):
        return any(_can_hold(arg, seen) for arg in typing.get_args(annotation))
    return False


def read_secrets(
    config: GatewayConfig,
    source: str,
    text: str | None = None,
    environ: Mapping[str, str] | None = None,
    max_bytes: int = MAX_SECRET_BYTES,
) -> dict[str, str]:
    """The value of every ``SecretRef`` in ``config`` by its key; :class:`ConfigError` with
    one located problem per secret that cannot be read. ``source`` is the config file (its
    directory anchors relative paths), ``text`` its content (to give lines and columns)."""
    base = Path(source).parent

    def located(failed: list[tuple[Loc, str]]) -> ConfigError:
        where = positions(text, [loc for loc, _ in failed]) if text is not None else {}
        return ConfigError([problem(source, loc, msg, where.get(loc)) for loc, msg in failed])

    return _read(config, lambda loc: base, located, environ, max_bytes)


def read_loaded_secrets(
    loaded: LoadedConfig,
    environ: Mapping[str, str] | None = None,
    max_bytes: int = MAX_SECRET_BYTES,
    read_file: ReadFile | None = None,
) -> dict[str, str]:
    """:func:`read_secrets` for a loaded config, which may be split across files: a relative
    ``file:`` is relative to the directory of the file that names it, and a problem is
    placed in that file. ``read_file`` reads one secret file (default
    :func:`read_file_secret`; the compile job's also remembers what it read, to watch it)."""
    origins = loaded.origins

    def base(loc: Loc) -> Path:
        index, _ = origins.origin(loc)
        return Path(origins.files[index].path if index is not None else origins.root).parent

    return _read(loaded.config, base, origins.problems, environ, max_bytes, read_file)


def _read(
    config: GatewayConfig,
    base: Callable[[Loc], Path],
    located: Callable[[list[tuple[Loc, str]]], ConfigError],
    environ: Mapping[str, str] | None,
    max_bytes: int,
    read_file: ReadFile | None = None,
) -> dict[str, str]:
    env = os.environ if environ is None else environ
    reader = read_file or (lambda path: read_file_secret(path, max_bytes))
    values: dict[str, str] = {}
    failed: list[tuple[Loc, str]] = []
    for loc, ref in secret_refs(config):
        key = ref.key()
        if key in values:
            continue
        try:
            if ref.env is not None:
                values[key] = read_env_secret(ref.env, env)
            else:
                assert ref.file is not None
                values[key] = reader(base(loc) / ref.file)
        except SecretReadError as exc:
            failed.append(((*loc, "env" if ref.env is not None else "file"), str(exc)))
    if failed:
        raise located(failed)
    return values


def read_env_secret(name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None:
        raise SecretReadError(
            f"environment variable {name} is not set (the control plane reads the secret "
            "from its own environment)"
        )
    if not value:
        raise SecretReadError(f"environment variable {name} is empty")
    return value


def read_file_secret(path: Path, max_bytes: int = MAX_SECRET_BYTES) -> str:
    """The secret in the file at ``path`` (see the module's docstring for the rules)."""
    where = f"secret file {show(str(path), limit=MAX_PATH_SHOWN)}"
    try:
        _check(where, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretReadError(f"{where}: {os_problem(exc, 'read')}") from None
    except ValueError:  # an embedded NUL byte
        raise SecretReadError(f"{where}: the path contains a NUL byte") from None
    try:
        _check(where, os.fstat(fd), max_bytes)  # what was opened, not what was stat-ed
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise SecretReadError(f"{where}: {os_problem(exc, 'read')}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise SecretReadError(f"{where}: more than {max_bytes} bytes (it grows while read)")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise SecretReadError(f"{where} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # the offending byte would be a piece of the secret: not quoted
        raise SecretReadError(f"{where} is not valid UTF-8") from None


def _check(where: str, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise SecretReadError(
            f"{where} is {file_kind(st.st_mode)}, not a regular file (or a symlink to one)"
        )
    if st.st_size > max_bytes:
        raise SecretReadError(
            f"{where} is {st.st_size} bytes, more than the limit of {max_bytes} bytes for a secret"
        )


__all__ = [
    "MAX_SECRET_BYTES",
    "SecretReadError",
    "read_env_secret",
    "read_file_secret",
    "read_loaded_secrets",
    "read_secrets",
    "secret_refs",
]
