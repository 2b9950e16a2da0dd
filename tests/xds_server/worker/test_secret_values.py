"""Secrets named by the config (``SecretRef``): read by the compile job into ``ctx.secrets``.

Environment variables and files (relative to the config file's directory, regular files only,
bounded, one trailing newline removed); whatever goes wrong is a located problem that never
quotes a value, and rejects the config.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshgate.config import GatewayConfig
from meshgate.loader import parse_config
from meshgate.problems import ConfigError
from xds_server.worker.job import Compiled, CompileJob, Rejected, run_job
from xds_server.worker.secret_values import (
    MAX_SECRET_BYTES,
    SecretReadError,
    _secret_fields,
    read_file_secret,
    read_secrets,
)

from .login_config import CONFIG, write_config

VALUE = "Sup3r-s3cret-client-value"


def load(path: Path) -> GatewayConfig:
    return parse_config(path.read_text(), str(path)).config


def problems(path: Path, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        read_secrets(load(path), str(path), path.read_text(), environ)
    return [str(p) for p in info.value.problems]


def test_env_and_relative_file_are_read_by_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, hmac_key="hmac-key-value")
    values = read_secrets(load(path), str(path), None, {"MG_TEST_CLIENT_SECRET": VALUE})
    assert values == {"env:MG_TEST_CLIENT_SECRET": VALUE, "file:keys/hmac.key": "hmac-key-value"}


def test_missing_secrets_are_located_problems_without_values(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert problems(path, {}) == [
        f"{path}:16:21: logins[0].client_secret.env: environment variable MG_TEST_CLIENT_SECRET "
        "is not set (the control plane reads the secret from its own environment)",
        f"{path}:18:7: logins[0].hmac_secret.file: secret file '{tmp_path}/keys/hmac.key': "
        "file not found",
    ]
    assert problems(path, {"MG_TEST_CLIENT_SECRET": ""})[0].endswith(
        "environment variable MG_TEST_CLIENT_SECRET is empty"
    )


def test_an_absolute_path_is_used_as_is(tmp_path: Path) -> None:
    key = tmp_path / "elsewhere.key"
    key.write_text("abs-value")
    path = write_config(tmp_path, CONFIG.replace("keys/hmac.key", str(key)))
    values = read_secrets(load(path), str(path), None, {"MG_TEST_CLIENT_SECRET": VALUE})
    assert values[f"file:{key}"] == "abs-value"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"value\n", "value"),
        (b"value\r\n", "value"),
        (b"value", "value"),
        (b"value\n\n", "value\n"),  # one newline, what echo adds; the rest is the secret's
        (b"  spaced value  \n", "  spaced value  "),
    ],
)
def test_one_trailing_newline_is_removed(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "s").write_bytes(content)
    assert read_file_secret(tmp_path / "s") == expected


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("linked-value\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_file_secret(tmp_path / "link") == "linked-value"


def refusal(path: Path, max_bytes: int = MAX_SECRET_BYTES) -> str:
    with pytest.raises(SecretReadError) as info:
        read_file_secret(path, max_bytes)
    return str(info.value)


def test_files_that_must_not_be_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block until a writer comes: never opened
    assert refusal(fifo) == (
        f"secret file '{fifo}' is a FIFO (named pipe), not a regular file (or a symlink to one)"
    )
    assert refusal(Path("/dev/zero")).endswith(
        "is a character device, not a regular file (or a symlink to one)"
    )
    assert refusal(tmp_path).endswith("is a directory, not a regular file (or a symlink to one)")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    assert refusal(big, 10) == (
        f"secret file '{big}' is 11 bytes, more than the limit of 10 bytes for a secret"
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert refusal(empty) == f"secret file '{empty}' is empty"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert refusal(loop).endswith("too many levels of symbolic links (a symlink loop?)")


def test_bytes_that_are_not_utf8_are_not_quoted(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"secret\xff\xfe-rest")
    message = refusal(bad)
    assert message == f"secret file '{bad}' is not valid UTF-8"
    assert "0xff" not in message and "secret\\" not in message


def test_only_fields_that_can_hold_a_secret_are_walked() -> None:
    # 100,000 routes must cost nothing: the walk goes only where a SecretRef can be
    assert _secret_fields(GatewayConfig) == ("logins",)


def test_the_compile_job_rejects_a_config_whose_secret_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, hmac_key="hmac-key-value")
    monkeypatch.delenv("MG_TEST_CLIENT_SECRET", raising=False)
    outcome = run_job(CompileJob(str(path)))
    assert isinstance(outcome, Rejected)
    [problem] = outcome.problems
    assert (problem.line, problem.column, problem.path) == (16, 21, "logins[0].client_secret.env")
    monkeypatch.setenv("MG_TEST_CLIENT_SECRET", VALUE)
    assert isinstance(run_job(CompileJob(str(path))), Compiled)
