"""The compile worker: one job in a child process, the newest input wins, failures are said.

``run_job`` is tested in-process; the runner is tested with real child processes over real
pipes. A "slow" worker is the real worker whose job sleeps first when the file is named
``slow.yaml``, so that "a compile in progress" is certain, not a race.
"""

from __future__ import annotations

import asyncio
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from meshgate.config import Endpoint
from meshgate.loader import ConfigError, load_config
from xds_server.compiler import compile_snapshot
from xds_server.sources.base import ConfigChanged
from xds_server.sources.state import CompileInput
from xds_server.worker import job as job_module
from xds_server.worker.child import serve_one
from xds_server.worker.job import (
    Compiled,
    CompileJob,
    Outcome,
    Rejected,
    Unchanged,
    locate_in_file,
    run_job,
    to_snapshot,
)
from xds_server.worker.runner import CompileRunner

GOOD = """listeners:
  - name: l
    port: 8080
    virtual_hosts:
      - name: v
        routes:
          - match: {prefix: /}
            service: api
services:
  - name: api
    endpoints: [{address: 127.0.0.1, port: 9000}]
"""


def slow_serve(job: CompileJob, conn: Connection) -> None:
    """The real worker, but a file named slow.yaml takes a minute: "compiling" for sure."""
    if job.path.endswith("slow.yaml"):
        time.sleep(60)
    serve_one(job, conn)


def failing_serve(job: CompileJob, conn: Connection) -> None:
    raise SystemExit("no module named x")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- the job, in-process ---------------------------------------------------------------------


def test_the_snapshot_rebuilt_from_bytes_is_the_one_compiled_in_process(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", GOOD)
    discovered = {"api": (Endpoint(address="10.0.0.7", port=80),)}
    outcome = run_job(CompileJob(path, discovered))
    assert isinstance(outcome, Compiled)
    rebuilt = to_snapshot(outcome)
    direct = compile_snapshot(load_config(path).config, discovered)
    assert rebuilt.version == direct.version
    assert dict(rebuilt.versions) == dict(direct.versions)
    assert rebuilt.labels == {"source": path, "digest": outcome.digest}
    assert rebuilt.consistency_errors() == []


def test_an_unchanged_digest_is_answered_without_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", GOOD)
    first = run_job(CompileJob(path))
    assert isinstance(first, Compiled)
    assert run_job(CompileJob(path, known_digest=first.digest)) == Unchanged(first.digest)


def test_a_bad_file_is_rejected_with_located_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", GOOD + "extra: 2024-13-01\n")
    outcome = run_job(CompileJob(path))
    assert isinstance(outcome, Rejected)
    [problem] = outcome.problems
    assert (problem.file, problem.line, problem.column) == (path, 12, 8)
    assert "month must be in 1..12" in problem.message


def test_a_missing_file_is_rejected_as_such(tmp_path: Path) -> None:
    outcome = run_job(CompileJob(str(tmp_path / "nope.yaml")))
    assert isinstance(outcome, Rejected) and outcome.digest == "unreadable"
    assert [p.message for p in outcome.problems] == ["file not found"]


def test_a_loader_bug_is_reported_not_swallowed_and_never_quotes_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug's exception text may carry a config value (here a bare API key, which no
    credential pattern recognises): status says where and what kind, the log has the stack,
    and neither has the text."""

    secret = "APIKEY" + "SEKRET456"  # built, so the stack's source lines do not show it

    def broken(files: object) -> None:
        raise RuntimeError(secret)

    monkeypatch.setattr(job_module, "parse_files", broken)
    outcome = run_job(CompileJob(write(tmp_path, "gw.yaml", GOOD)))
    assert isinstance(outcome, Rejected)
    [problem] = outcome.problems
    assert problem.origin == "compiler bug"
    assert problem.message.startswith(
        "cannot load the file: internal error (RuntimeError at test_compile_worker.py:"
    )
    log = capsys.readouterr().err
    assert "in broken" in log and "RuntimeError: (message withheld" in log
    assert "APIKEYSEKRET456" not in problem.message + log


# -- the runner, with real child processes -----------------------------------------------------


class Delivered:
    def __init__(self) -> None:
        self.outcomes: list[tuple[int, Outcome]] = []
        self.event = asyncio.Event()

    async def __call__(self, request: CompileInput, outcome: Outcome) -> None:
        self.outcomes.append((request.generation, outcome))
        self.event.set()

    async def next(self, timeout: float = 20.0) -> tuple[int, Outcome]:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        return self.outcomes[-1]


def request(generation: int, path: str) -> CompileInput:
    return CompileInput(generation, ConfigChanged("file:test", path, str(generation)))


async def until_running(runner: CompileRunner) -> int:
    for _ in range(500):
        if runner.running_pid is not None:
            return runner.running_pid
        await asyncio.sleep(0.01)
    raise AssertionError("the compile never started")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it has exited all the same
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_forked_worker_compiles_what_the_file_says(tmp_path: Path) -> None:
    delivered = Delivered()
    runner = CompileRunner(delivered)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "gw.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        generation, outcome = await delivered.next()
        assert generation == 1 and isinstance(outcome, Compiled)
        in_process = run_job(CompileJob(path))
        assert isinstance(in_process, Compiled)
        assert to_snapshot(outcome).version == to_snapshot(in_process).version
        assert runner.as_dict()["last"]["result"] == "compiled"
        assert runner.as_dict()["running"] is None
    finally:
        task.cancel()
        await runner.stop()


async def test_a_newer_input_kills_the_compile_in_progress(
    tmp_path: Path,
) -> None:
    delivered = Delivered()
    runner = CompileRunner(delivered, target=slow_serve)
    task = asyncio.create_task(runner.run())
    try:
        runner.submit(request(1, write(tmp_path, "slow.yaml", GOOD)))
        slow_pid = await until_running(runner)
        runner.submit(request(2, write(tmp_path, "gw.yaml", GOOD)))
        generation, outcome = await delivered.next()
        assert generation == 2 and isinstance(outcome, Compiled)
        assert [g for g, _ in delivered.outcomes] == [2]  # the older one never arrives
        assert gone(slow_pid) and runner.superseded == 1
    finally:
        task.cancel()
        await runner.stop()


async def test_a_worker_killed_by_a_signal_is_a_precise_problem(
    tmp_path: Path,
) -> None:
    delivered = Delivered()
    runner = CompileRunner(delivered, target=slow_serve)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "slow.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        os.kill(await until_running(runner), 9)  # as the kernel's OOM killer does
        generation, outcome = await delivered.next()
        assert isinstance(outcome, Rejected)
        [problem] = outcome.problems
        assert str(problem).startswith(
            f"{path} (compile worker): compiling {path} failed: "
            "worker exited with signal 9 (SIGKILL); unless someone killed it, the kernel ran "
            "out of memory"
        )
    finally:
        task.cancel()
        await runner.stop()


async def test_a_worker_that_fails_says_so(tmp_path: Path) -> None:
    delivered = Delivered()
    runner = CompileRunner(delivered, target=failing_serve)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "gw.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        _, outcome = await delivered.next()
        assert isinstance(outcome, Rejected)
        assert [p.message for p in outcome.problems] == [
            f"compiling {path} failed: worker exited with status 1 (its error is in this log above)"
        ]
    finally:
        task.cancel()
        await runner.stop()


async def test_a_compile_that_takes_too_long_is_stopped_and_rejected(
    tmp_path: Path,
) -> None:
    delivered = Delivered()
    runner = CompileRunner(delivered, timeout=0.5, target=slow_serve)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "slow.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        pid = await until_running(runner)
        _, outcome = await delivered.next()
        assert isinstance(outcome, Rejected)
        assert [p.message for p in outcome.problems] == [
            f"compiling {path} failed: no result after 0.5 s"
        ]
        assert gone(pid)
    finally:
        task.cancel()
        await runner.stop()


async def test_stop_kills_a_compile_in_progress(
    tmp_path: Path,
) -> None:
    delivered = Delivered()
    runner = CompileRunner(delivered, target=slow_serve)
    task = asyncio.create_task(runner.run())
    runner.submit(request(1, write(tmp_path, "slow.yaml", GOOD)))
    pid = await until_running(runner)
    task.cancel()
    await asyncio.wait_for(runner.stop(), 5)
    assert gone(pid) and delivered.outcomes == []


async def test_a_dead_fork_server_is_started_again_by_the_next_compile(tmp_path: Path) -> None:
    from multiprocessing import forkserver

    delivered = Delivered()
    runner = CompileRunner(delivered)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "gw.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        await delivered.next()
        server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        assert server is not None
        os.kill(server, 9)
        for _ in range(200):
            if gone(server):
                break
            await asyncio.sleep(0.01)
        runner.submit(request(2, path))
        generation, outcome = await delivered.next()
        assert generation == 2 and isinstance(outcome, Compiled)
        assert forkserver._forkserver._forkserver_pid != server  # type: ignore[attr-defined]
    finally:
        task.cancel()
        await runner.stop()


def test_envoys_objection_is_located_only_while_the_file_is_the_compiled_one(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "gw.yaml", GOOD)
    compiled = run_job(CompileJob(path))
    assert isinstance(compiled, Compiled)
    message = "Error adding/updating cluster(s) api: bad"
    [problem] = locate_in_file(CompileJob(path), compiled.digest, message)
    assert (problem.path, problem.line) == ("services[0]", 10)
    Path(path).write_text(GOOD.replace("9000", "9001"))  # edited since: nothing is certain
    assert locate_in_file(CompileJob(path), compiled.digest, message) == []


async def test_the_runner_locates_in_a_worker(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", GOOD)
    compiled = run_job(CompileJob(path))
    assert isinstance(compiled, Compiled)
    runner = CompileRunner(Delivered())
    message = "Error adding/updating cluster(s) api: bad"
    assert await runner.locate(path, compiled.digest, message) == locate_in_file(
        CompileJob(path), compiled.digest, message
    )


async def test_a_worker_that_cannot_be_started_is_a_rejection_not_a_dead_runner(
    tmp_path: Path,
) -> None:
    def local_target(job: CompileJob, conn: Connection) -> None:  # cannot be pickled
        serve_one(job, conn)

    delivered = Delivered()
    runner = CompileRunner(delivered, target=local_target)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "gw.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        _, outcome = await delivered.next()
        assert isinstance(outcome, Rejected)
        [problem] = outcome.problems
        assert problem.message.startswith(f"compiling {path} failed: cannot run a worker: ")
        runner.submit(request(2, path))  # the runner is still there for the next input
        generation, _ = await delivered.next()
        assert generation == 2
    finally:
        task.cancel()
        await runner.stop()


def test_the_node_limit_is_the_control_planes_and_reaches_the_worker(tmp_path: Path) -> None:
    from xds_server.app import ControlPlane, parse_args

    path = write(tmp_path, "gw.yaml", GOOD)
    plane = ControlPlane(parse_args(["--config", path, "--max-config-nodes", "10"]))
    assert plane.compiler.limits.max_nodes == 10
    outcome = run_job(CompileJob(path, limits=plane.compiler.limits))
    assert isinstance(outcome, Rejected)
    assert "more than 10 nodes" in outcome.problems[0].message


async def test_a_stopped_fork_server_is_bounded_by_the_timeout_and_replaced(
    tmp_path: Path,
) -> None:
    """SIGSTOP on the fork server froze every compile forever: starting a worker waited for it
    without any timeout. Now the start counts against --compile-timeout, the frozen server is
    killed, and the next compile gets a fresh one."""
    import signal
    from multiprocessing import forkserver

    delivered = Delivered()
    runner = CompileRunner(delivered, timeout=1.0)
    task = asyncio.create_task(runner.run())
    path = write(tmp_path, "gw.yaml", GOOD)
    try:
        runner.submit(request(1, path))
        await delivered.next()
        server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        assert server is not None
        os.kill(server, signal.SIGSTOP)
        runner.submit(request(2, path))
        generation, outcome = await asyncio.wait_for(delivered.next(), 10)
        assert generation == 2 and isinstance(outcome, Rejected)
        assert [p.message for p in outcome.problems] == [
            f"compiling {path} failed: no worker started within 1 s (the compile workers' "
            "fork server did not answer; it was killed and the next compile starts a new one)"
        ]
        runner.submit(request(3, path))
        generation, outcome = await asyncio.wait_for(delivered.next(), 10)
        assert generation == 3 and isinstance(outcome, Compiled)
        assert gone(server)
    finally:
        task.cancel()
        await runner.stop()


def test_a_file_being_written_is_read_once_it_has_settled(tmp_path: Path) -> None:
    """An in-place write (truncate, then write) seen half-way is a smaller file that may well
    be valid YAML and a valid config (routes cut off): it must not be what is compiled. The
    worker waits until the file has not changed for ``settle`` seconds and re-reads it when it
    changed while being read."""
    import threading

    # the first half of the file, just written: valid on its own
    path = write(tmp_path, "gw.yaml", GOOD)
    full = GOOD + "  - name: web\n    endpoints: [{address: 127.0.0.1, port: 9001}]\n"

    def finish_writing() -> None:
        time.sleep(0.1)
        Path(path).write_text(full)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    try:
        outcome = run_job(CompileJob(path, settle=0.3))
    finally:
        writer.join()
    assert outcome.digest == job_module.digest_of(full)


# -- a config split across files ---------------------------------------------------------------

SERVICES = """services:
  - name: api
    endpoints: [{address: 127.0.0.1, port: 9000}]
"""


def test_a_directory_compiles_and_a_touch_is_unchanged_an_edit_is_not(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    listener = GOOD.split("services:")[0]
    (conf / "a.yaml").write_text(listener)
    (conf / "b.yaml").write_text(SERVICES)
    first = run_job(CompileJob(str(conf)))
    assert isinstance(first, Compiled)
    assert first.labels == {"source": str(conf), "digest": first.digest}
    assert {path for path, _ in first.watched} == {
        str(conf),
        str(conf / "a.yaml"),
        str(conf / "b.yaml"),
    }
    os.utime(conf / "b.yaml")  # touched, same content
    assert isinstance(run_job(CompileJob(str(conf), known_digest=first.digest)), Unchanged)
    (conf / "b.yaml").write_text(SERVICES.replace("9000", "9001"))
    edited = run_job(CompileJob(str(conf), known_digest=first.digest))
    assert isinstance(edited, Compiled) and edited.digest != first.digest


def test_a_broken_file_of_a_directory_is_rejected_in_its_own_name(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.yaml").write_text(GOOD)
    (conf / "b.yaml").write_text("roles: [\n")
    outcome = run_job(CompileJob(str(conf)))
    assert isinstance(outcome, Rejected)
    assert outcome.digest not in ("unreadable", "")  # the content is known: a content digest
    [problem] = outcome.problems
    assert (problem.file, problem.line) == (str(conf / "b.yaml"), 2)
    os.mkfifo(conf / "c.yaml")
    unreadable = run_job(CompileJob(str(conf)))
    assert isinstance(unreadable, Rejected) and unreadable.digest == "unreadable"
    assert [p.file for p in unreadable.problems] == [str(conf / "b.yaml"), str(conf / "c.yaml")]
    assert str(conf / "c.yaml") in dict(unreadable.watched)  # fixed later: noticed


def test_envoys_objection_is_located_in_the_file_of_a_directory(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.yaml").write_text(GOOD.split("services:")[0])
    (conf / "b.yaml").write_text(SERVICES)
    compiled = run_job(CompileJob(str(conf)))
    assert isinstance(compiled, Compiled)
    message = "Error adding/updating cluster(s) api: bad"
    [problem] = locate_in_file(CompileJob(str(conf)), compiled.digest, message)
    assert (problem.file, problem.path, problem.line) == (str(conf / "b.yaml"), "services[0]", 2)
    (conf / "c.yaml").write_text("# new\n")  # another file since: nothing is certain
    assert locate_in_file(CompileJob(str(conf)), compiled.digest, message) == []


def test_a_secret_file_is_relative_to_the_file_that_names_it(tmp_path: Path) -> None:
    """In a split config, ``file: hmac.key`` in ``conf/team/login.yaml`` is
    ``conf/team/hmac.key``, and a missing one is reported in that file."""
    from xds_server.worker.secret_values import read_loaded_secrets

    conf = tmp_path / "conf"
    team = conf / "team"
    team.mkdir(parents=True)
    (conf / "a.yaml").write_text("include: [team/login.yaml]\n" + GOOD)
    (team / "login.yaml").write_text(
        "logins:\n"
        "  - name: staff\n"
        "    provider: github\n"
        "    client_id: abc\n"
        "    client_secret: {file: client.secret}\n"
        "    hmac_secret: {file: hmac.key}\n"
    )
    (team / "client.secret").write_text("s3cret\n")
    loaded = load_config(conf)
    with pytest.raises(ConfigError) as info:
        read_loaded_secrets(loaded)
    [missing] = info.value.problems
    assert (missing.file, missing.line, missing.path) == (
        str(team / "login.yaml"),
        6,
        "logins[0].hmac_secret.file",
    )
    (team / "hmac.key").write_text("k" * 32)
    assert sorted(read_loaded_secrets(loaded).values()) == ["k" * 32, "s3cret"]
