"""A Ctrl-C while the ``meshgate`` command is still importing ends it quietly.

The signal is sent once the process has *run* for 0.05, 0.1 or 0.2 s (its CPU time, from
/proc), not after that much wall time: the interpreter's own start-up (~20 ms of CPU, before
any meshgate code can run) stretches on a loaded machine, while the point is to hit the few
hundred milliseconds of imports that follow it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.paths import ROOT

# What pip's generated console script does, with the target pyproject.toml names.
SCRIPT = "import sys; from meshgate.cli.entry import main; sys.exit(main())"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def interrupt_after_running(proc: subprocess.Popen[str], seconds: float) -> None:
    while cpu_seconds(proc.pid) < seconds:
        assert proc.poll() is None
        time.sleep(0.001)
    assert proc.poll() is None, "finished before the signal: the test proves nothing"
    proc.send_signal(signal.SIGINT)


def test_the_console_script_starts_at_the_quiet_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["meshgate"] == "meshgate.cli.entry:main"


@pytest.mark.parametrize("how", ["script", "module"])
@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2])
def test_sigint_during_start_up_exits_130_without_a_traceback(how: str, delay: float) -> None:
    start = (
        [sys.executable, "-c", SCRIPT]
        if how == "script"
        else [sys.executable, "-m", "meshgate.cli"]
    )
    proc = subprocess.Popen(
        [*start, "validate", str(ROOT / "examples" / "quickstart.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    interrupt_after_running(proc, delay)
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(err.splitlines()) <= 1, err
    assert proc.returncode == 130
    assert out == ""
