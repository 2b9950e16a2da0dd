"""What the config path may point at: only a regular file is read, bounded, never blocking.

Each hostile target (a FIFO, ``/dev/zero``, a directory, a socket, an oversized or growing file,
bad UTF-8, an unreadable file) is created for real in ``tmp_path``; ``meshgate validate`` runs
as a subprocess with a timeout, so a hang fails the test instead of freezing the run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshgate.files import DEFAULT_MAX_CONFIG_BYTES, read_config_text
from meshgate.loader import ConfigError, load_config
from tests.paths import ROOT
from xds_server.app import ControlPlane, Settings, parse_args

GOOD = (
    "listeners:\n"
    "  - name: public\n"
    "    port: 8080\n"
    "    virtual_hosts:\n"
    "      - name: default\n"
    "        routes:\n"
    "          - {match: {prefix: /}, service: web}\n"
    "services:\n"
    "  - name: web\n"
)


def validate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,  # a FIFO used to hang here forever
        cwd=ROOT,
        check=False,
    )


def problem_of(path: Path, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> str:
    with pytest.raises(ConfigError) as info:
        read_config_text(path, max_bytes)
    [problem] = info.value.problems
    assert problem.file == str(path)
    return problem.message


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    os.mkfifo(path)
    return path


@pytest.fixture
def dev_zero(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.symlink_to("/dev/zero")
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gateway.yaml"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        yield path


def test_fifo_is_refused_by_validate_without_blocking(fifo: Path) -> None:
    result = validate(fifo)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {fifo}: is a FIFO (named pipe), not a regular file; a config is read only "
        "from a regular file (or a symlink to one)\n"
    )


def test_symlink_to_dev_zero_is_refused_by_validate(dev_zero: Path) -> None:
    result = validate(dev_zero)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {dev_zero}: is a character device, not a regular file; a config is read "
        "only from a regular file (or a symlink to one)\n"
    )


def test_directory_and_socket_are_named(tmp_path: Path, unix_socket: Path) -> None:
    assert problem_of(tmp_path).startswith("is a directory, not a regular file")
    assert problem_of(unix_socket).startswith("is a socket, not a regular file")


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    with path.open("wb") as f:  # sparse: no need to write 8 MiB
        f.truncate(DEFAULT_MAX_CONFIG_BYTES + 1)
    assert problem_of(path) == (
        f"the file is {DEFAULT_MAX_CONFIG_BYTES + 1} bytes, more than the limit of "
        f"{DEFAULT_MAX_CONFIG_BYTES} bytes (raise it with --max-config-bytes)"
    )


def test_max_config_bytes_option_of_validate(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD, encoding="utf-8")
    size = len(GOOD.encode())
    refused = validate(path, "--max-config-bytes", str(size - 1))
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: {path}: the file is {size} bytes, more than the limit of {size - 1} bytes "
        "(raise it with --max-config-bytes)\n"
    )
    assert validate(path, "--max-config-bytes", str(size)).returncode == 0


def test_max_config_nodes_option_of_validate(tmp_path: Path) -> None:
    """The same limit flags as the gateway's, so validate judges a file as the gateway will."""
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD, encoding="utf-8")
    refused = validate(path, "--max-config-nodes", "5")
    assert refused.returncode == 1
    assert "the YAML has more than 5 nodes (keys, values and collections)" in refused.stderr
    assert validate(path, "--max-config-nodes", "1000").returncode == 0


def test_a_file_larger_than_it_says_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    """/proc files report size 0 (as a file still being written may report less than it
    has): the read stops at the limit whatever st_size said."""
    path = tmp_path / "gateway.yaml"
    path.symlink_to("/proc/self/status")
    assert os.stat(path).st_size == 0 and len(Path("/proc/self/status").read_bytes()) > 100
    assert problem_of(path, max_bytes=100) == (
        "more than 100 bytes could be read although the file said it was 0 bytes (it grows, "
        "or does not report its size); the limit is 100 bytes (raise it with --max-config-bytes)"
    )


def test_bad_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    # the column counts characters (é is two bytes), as an editor shows it
    path.write_bytes(b"listeners:\n  - name: caf\xc3\xa9-\xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert str(problem) == (
        f"{path}:2:16: not valid UTF-8: byte 0xff at byte offset 27 (invalid start byte); "
        "save the file as UTF-8"
    )


def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD, encoding="utf-8")
    path.chmod(0)
    tmp_path.chmod(0o755)
    expected = "permission denied: cannot open the file (check its owner and mode)"
    if os.geteuid() != 0:
        assert problem_of(path) == expected
        return
    # root reads a mode-000 file anyway; take an unprivileged effective uid for the check
    # (reversible: the saved uid stays 0)
    os.seteuid(65534)
    try:
        message = problem_of(path)
    finally:
        os.seteuid(0)
    assert message == expected


def test_symlink_loop_and_nul_byte(tmp_path: Path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    assert problem_of(loop) == "too many levels of symbolic links (a symlink loop?)"
    with pytest.raises(ConfigError) as info:
        read_config_text(f"{tmp_path}/a\0b")
    assert info.value.problems[0].message == "the path contains a NUL byte"


def test_configmap_style_symlinks_are_followed(tmp_path: Path) -> None:
    """Kubernetes mounts each key as key -> ..data/key, ..data -> ..<timestamp>/."""
    versioned = tmp_path / "..2024_01_01"
    versioned.mkdir()
    (versioned / "gateway.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "..data").symlink_to(versioned.name)
    (tmp_path / "gateway.yaml").symlink_to("..data/gateway.yaml")
    loaded = load_config(tmp_path / "gateway.yaml")
    assert loaded.config.services[0].name == "web"


async def test_watcher_reports_fifo_and_dev_zero_then_recovers(tmp_path: Path) -> None:
    """The running control plane's watcher: each refusal is a problem (shown by status),
    the event loop is never blocked (the file is read by the compile worker), and swapping
    the link back to a file recovers."""
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    link = tmp_path / "gateway.yaml"
    link.symlink_to(good)
    plane = ControlPlane(Settings(str(link), validator="none"))
    await plane.check_config()
    published = plane.status()["config"]["version"]
    assert published is not None

    for target, what in (("/dev/zero", "a character device"), (None, "a FIFO (named pipe)")):
        link.unlink()
        if target is None:
            os.mkfifo(link)
        else:
            link.symlink_to(target)
        await plane.check_config()
        [error] = plane.status()["config"]["errors"]
        assert error["message"].startswith(f"is {what}, not a regular file")
        assert plane.status()["config"]["version"] == published

    link.unlink()
    link.symlink_to(good)  # the same good text as before: still news after the refusals
    await plane.check_config()
    assert plane.status()["config"]["errors"] == []
    await plane.compiler.stop()


async def test_control_plane_status_shows_the_refusal(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.symlink_to("/dev/zero")
    plane = ControlPlane(Settings(str(path), validator="none"))
    await plane.check_config()
    [error] = plane.status()["config"]["errors"]
    assert error["file"] == str(path)
    assert error["message"].startswith("is a character device, not a regular file")


def test_control_plane_takes_max_config_bytes() -> None:
    settings = parse_args(["--config", "x.yaml", "--max-config-bytes", "1234"])
    assert settings.max_config_bytes == 1234
    assert parse_args(["--config", "x.yaml"]).max_config_bytes == DEFAULT_MAX_CONFIG_BYTES
    plane = ControlPlane(settings)
    assert plane.compiler.max_bytes == 1234
