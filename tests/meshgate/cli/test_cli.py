"""``meshgate validate`` and ``meshgate render`` as an operator runs them: a real subprocess.

Going through ``python -m meshgate.cli`` (not ``main()`` in-process) also checks the exit codes
and that errors go to stderr and results to stdout, which shell scripts and CI rely on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT, TESTS

QUICKSTART = ROOT / "examples" / "quickstart.yaml"
INVALID = TESTS / "fixtures" / "invalid"


def meshgate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_validate_good_file() -> None:
    result = meshgate("validate", QUICKSTART)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{QUICKSTART}: ok (1 listener(s), 5 route(s), 2 service(s);")


@pytest.mark.parametrize("kind", ["unknown_service", "unknown_http_method", "yaml_syntax"])
def test_validate_bad_file(kind: str) -> None:
    path = INVALID / f"{kind}.yaml"
    result = meshgate("validate", path)
    assert result.returncode == 1
    assert result.stdout == ""
    expected = (INVALID / f"{kind}.expected").read_text(encoding="utf-8")
    assert result.stderr == "".join(
        f"error: {line.replace('{file}', str(path))}\n" for line in expected.splitlines()
    )


def test_validate_reports_the_exact_message(tmp_path: Path) -> None:
    """Written out in full once, so a reader sees what an operator sees."""
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        "listeners:\n"
        "  - name: public\n"
        "    port: 8080\n"
        "    virtual_hosts:\n"
        "      - name: default\n"
        "        routes:\n"
        "          - {match: {prefix: /}, service: web}\n",
        encoding="utf-8",
    )
    result = meshgate("validate", bad)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {bad}:7:34: listeners[0].virtual_hosts[0].routes[0].service: "
        "unknown service 'web' (defined services: none)\n"
    )


def test_validate_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = meshgate("validate", missing)
    assert result.returncode == 1
    assert result.stderr == f"error: {missing}: file not found\n"


def test_render_prints_the_snapshot_as_json() -> None:
    result = meshgate("render", QUICKSTART)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert set(rendered) == {"version", "resources", "versions"}
    assert set(rendered["resources"]) == {"CDS", "EDS", "LDS", "RDS"}
    assert set(rendered["versions"]) == {"CDS", "EDS", "LDS", "RDS"}
    assert [c["name"] for c in rendered["resources"]["CDS"]] == ["echo-a", "echo-b"]
    assert [lst["name"] for lst in rendered["resources"]["LDS"]] == ["public"]
    # The same document the golden test pins: render is the golden file's producer.
    golden = json.loads((TESTS / "golden" / "quickstart.json").read_text())
    assert rendered == golden


def test_render_bad_file_fails_like_validate() -> None:
    path = INVALID / "duplicate_key.yaml"
    result = meshgate("render", path)
    assert result.returncode == 1
    assert result.stdout == ""
    expected = (INVALID / "duplicate_key.expected").read_text(encoding="utf-8")
    assert result.stderr == f"error: {expected.replace('{file}', str(path))}"


def test_status_is_unhealthy_on_rejected_config_or_a_fleet_refusal() -> None:
    from meshgate.cli.main import unhealthy

    in_sync = {"state": "in_sync", "types": {"LDS": {"state": "in_sync"}}}
    refused = {"state": "refused", "types": {"LDS": {"state": "refused"}}}
    # an Envoy that once refused, then ran the published snapshot again, is in sync
    assert not unhealthy({"config": {"errors": []}, "envoys": [in_sync]})
    assert unhealthy({"config": {"errors": [{"message": "x"}]}, "envoys": []})
    assert unhealthy({"config": {"errors": []}, "envoys": [in_sync, refused]})
    assert not unhealthy({"config": {"errors": []}, "envoys": [{"state": "updating"}]})


def test_version_and_plain_meshgate() -> None:
    from meshgate import __version__

    result = meshgate("--version")
    assert result.returncode == 0 and result.stdout == f"meshgate {__version__}\n"
    bare = meshgate()
    assert bare.returncode == 0 and bare.stderr == ""
    assert bare.stdout.startswith("usage: meshgate") and "status" in bare.stdout


def test_every_flag_has_help_with_its_default() -> None:
    import argparse

    from meshgate.cli.main import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"meshgate {name} {action.option_strings[0]} has no help"
            # every flag says what happens without it: its value, or in words
            assert "default" in action.help or action.default not in (None, False), (
                name,
                action.option_strings,
            )
            if action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action)


def test_validate_with_a_missing_envoy_is_one_line(tmp_path: Path) -> None:
    result = meshgate("validate", "--with-envoy", "--envoy", "/nonexistent", QUICKSTART)
    assert result.returncode == 1
    assert result.stderr == "error: --envoy /nonexistent: not an executable file\n"
    not_a_binary = tmp_path / "envoy"
    not_a_binary.write_text("not a program")
    not_a_binary.chmod(0o755)
    result = meshgate("validate", "--with-envoy", "--envoy", not_a_binary, QUICKSTART)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {QUICKSTART}: cannot run {not_a_binary} --mode validate: Exec format error\n"
    )


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("exit 3", "envoy --mode validate exited with code 3 and printed nothing"),
        ("kill -9 $$", "envoy --mode validate was killed by signal 9 (SIGKILL)"),
    ],
)
def test_validate_says_what_happened_when_envoy_gives_no_reason(
    tmp_path: Path, script: str, said: str
) -> None:
    fake = tmp_path / "envoy"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    result = meshgate("validate", "--with-envoy", "--envoy", fake, QUICKSTART)
    assert result.returncode == 1
    assert result.stderr == f"error: {QUICKSTART}: {said}\n"


@pytest.mark.integration
def test_validate_with_envoy_reports_what_only_envoy_rejects(tmp_path: Path) -> None:
    """A substitution command Envoy does not know passes our checks (the list changes with
    every Envoy release); Envoy names it. (Regexes RE2 refuses, like a{1001}, are refused by
    our own check already: see tests/meshgate/test_loader_regex.py.)"""
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "listeners:\n"
        "  - name: public\n"
        "    port: 8080\n"
        "    virtual_hosts:\n"
        "      - name: default\n"
        "        routes:\n"
        "          - match: {prefix: /}\n"
        "            direct_response: {status: 200}\n"
        "            response_headers: {set: {x-bad: '%NOT_A_COMMAND%'}}\n",
        encoding="utf-8",
    )
    assert meshgate("validate", path).returncode == 0
    result = meshgate("validate", "--with-envoy", path)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {path}: Envoy rejected the config: Not supported field in StreamInfo: "
        "NOT_A_COMMAND\n"
    )


def test_output_cut_short_by_the_reader_is_no_traceback(tmp_path: Path) -> None:
    """`meshgate render x.yaml | head -1`: the pipe closes early. The output is made larger
    than a pipe's buffer, so the writer is certainly still writing when it closes."""
    routes = "".join(
        f"          - {{match: {{path: /r{i}}}, direct_response: {{status: 200}}}}\n"
        for i in range(2000)
    )
    big = tmp_path / "big.yaml"
    big.write_text(
        "listeners:\n  - name: l\n    port: 8080\n    virtual_hosts:\n"
        f"      - name: v\n        routes:\n{routes}",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshgate.cli", "render", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"{\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_status_against_no_control_plane_is_one_line_each() -> None:
    import http.server
    import threading

    from meshgate.proxy.envoy_process import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    result = meshgate("status", "--url", closed)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach the control plane at {closed}: ")
    assert result.stderr.count("\n") == 1
    result = meshgate("status", "--url", "controlplane")  # not a URL at all
    assert (result.returncode, result.stderr) == (
        1,
        "error: --url controlplane: unknown url type: 'controlplane/status'\n",
    )
    result = meshgate("status", "--url", "http://127.0.0.1:18001x")
    assert (result.returncode, result.stderr) == (
        1,
        "error: --url http://127.0.0.1:18001x: nonnumeric port: '18001x'\n",
    )

    class NotMeshgate(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>something else</html>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotMeshgate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = meshgate("status", "--url", url)
        assert (result.returncode, result.stderr) == (
            1,
            f"error: {url} answered, but not with meshgate's status JSON\n",
        )
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"config": 1}', b'{"envoys": [{}]}', b'{"config": {"errors": [1]}}', b"1"],
)
def test_status_from_a_server_that_is_json_but_not_meshgate_is_one_line(body: bytes) -> None:
    """Whatever answers --url is untrusted: JSON of another shape used to end in a Python
    traceback (AttributeError, KeyError) instead of an error line."""
    import http.server
    import threading

    class OtherJson(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), OtherJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = meshgate("status", "--url", url)
        assert (result.returncode, result.stderr) == (
            1,
            f"error: {url} answered, but not with meshgate's status JSON\n",
        ), result.stderr
    finally:
        server.shutdown()
