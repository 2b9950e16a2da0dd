"""Envoy work directories are swept once their owner is gone, even after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from meshgate.proxy.bootstrap import BootstrapParams
from meshgate.proxy.envoy_process import WORKDIR_FAMILY, EnvoyProcess
from meshgate.runtime.workdirs import LOCK_NAME, OwnedDir, sweep_abandoned

# An owner that makes a directory, says where, and waits to be killed.
OWNER = """
import sys, time
from pathlib import Path
from meshgate.runtime.workdirs import OwnedDir
d = OwnedDir(sys.argv[1], "owner", Path(sys.argv[2]))
(d.path / "bootstrap.yaml").write_text("x")
print(d.path, flush=True)
time.sleep(60)
"""


def start_owner(family: str, root: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, family, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_the_directory_of_a_killed_owner_is_swept_and_live_ones_are_kept(tmp_path: Path) -> None:
    family = "meshgate-test-"
    killed, killed_dir = start_owner(family, tmp_path)
    alive, alive_dir = start_owner(family, tmp_path)
    try:
        mine = OwnedDir(family, "mine", tmp_path)
        legacy = tmp_path / f"{family}legacy-abc"  # an older meshgate's, without a lock file
        legacy.mkdir()
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_dir.is_dir()  # nothing of the owner ran at its death

        assert sweep_abandoned(family, tmp_path) == [killed_dir]
        assert not killed_dir.exists()
        assert alive_dir.is_dir() and (alive_dir / "bootstrap.yaml").exists()
        assert mine.path.is_dir() and legacy.is_dir()
        mine.remove()
        assert not mine.path.exists()
        mine.remove()  # idempotent
    finally:
        alive.kill()
        alive.wait()
    assert sweep_abandoned(family, tmp_path) == [alive_dir]


def test_a_new_owned_dir_sweeps_its_family_only(tmp_path: Path) -> None:
    killed, killed_dir = start_owner("meshgate-a-", tmp_path)
    other, other_dir = start_owner("meshgate-b-", tmp_path)
    for p in (killed, other):
        p.kill()
        p.wait()
    d = OwnedDir("meshgate-a-", "next", tmp_path)
    assert not killed_dir.exists()
    assert other_dir.is_dir()  # another family: not ours to judge
    assert (d.path / LOCK_NAME).exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging leftovers
    d.remove()


def test_a_worker_forked_by_the_owner_does_not_keep_the_directory_locked(
    tmp_path: Path,
) -> None:
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from meshgate.runtime.workdirs import OwnedDir\n"
        f"d = OwnedDir('meshgate-fork-', 'x', Path({str(tmp_path)!r}))\n"
        "worker = os.fork()\n"
        "if worker == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(d.path, worker, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    path, worker = owner.stdout.readline().split()
    try:
        owner.kill()
        owner.wait()
        assert Path(f"/proc/{worker}").exists()  # the worker lives on
        assert sweep_abandoned("meshgate-fork-", tmp_path) == [Path(path)]
    finally:
        os.kill(int(worker), signal.SIGKILL)


def test_creating_an_envoy_process_sweeps_envoy_dirs_of_killed_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (
        "from meshgate.proxy.bootstrap import BootstrapParams\n"
        "from meshgate.proxy.envoy_process import EnvoyProcess\n"
        "import time\n"
        "e = EnvoyProcess(BootstrapParams(node_id='killed', xds_port=1, admin_port=2))\n"
        "print(e.workdir, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.stdout is not None
    leaked = Path(proc.stdout.readline().strip())
    assert leaked.parent == tmp_path and leaked.name.startswith(WORKDIR_FAMILY + "killed-")
    proc.kill()
    proc.wait()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    envoy = EnvoyProcess(BootstrapParams(node_id="next", xds_port=1, admin_port=2))
    try:
        assert not leaked.exists()
        assert envoy.bootstrap_path.exists()
    finally:
        envoy.stop()
    assert not envoy.workdir.exists()
