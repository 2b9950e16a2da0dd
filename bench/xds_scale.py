"""How the control plane scales with the number of routes: compile, publish, ACK, memory.

For each size N (default 100, 1,000 and 10,000 routes) it generates one listener with N routes
(50 % prefix, 30 % exact path, 20 % regex) spread over N/10 services, and measures:

compile    ``meshgate.loader.parse_config`` (YAML + schema + references) and
           ``xds_server.compiler.compile_snapshot`` in this process, best of 3.
publish    a fresh control plane (``python -m xds_server``, default canary validator,
           ``--poll-interval 0.05``) plus one fleet Envoy start on a small base config; the
           N-route config then replaces the watched file, and ``/status`` is polled every 10 ms:
           "published" is when ``config.version`` is the new snapshot's, "ACKed" is when the
           fleet Envoy has ACKed the new version of all four types (CDS, EDS, LDS, RDS). Both
           are measured from the file replacement, so they include the file poll (<= 50 ms).
RSS        VmRSS (and peak VmHWM) of the control-plane Python process only, after the ACK
           (the compile worker, a separate process, is not included).
worker     read + parse + validate + compile inside the control plane's compile worker
           (``meshgate_config_compile_seconds``); "max /status" is the slowest /status answer
           between the file write and the fleet ACK.
validate   the canary's time to judge the candidate (``meshgate_config_validate_seconds``
           sum/count delta from ``/metrics``) against ``envoy --mode validate`` on the same
           snapshot (``ValidateModeValidator.validate``), which needs a fresh Envoy process.

    python bench/xds_scale.py                  # 100, 1000, 10000
    python bench/xds_scale.py --sizes 1000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from benchlib import (
    BenchError,
    ControlPlane,
    FleetEnvoy,
    cleanup,
    format_table,
    rss_kib,
    wait_until,
    write_text_atomic,
)

from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.loader import parse_config
from meshgate.proxy.envoy_process import free_port
from meshgate.runtime.gc_pause import gc_paused
from meshgate.yaml_bounds import DEFAULT_LIMITS
from xds_server.compiler import compile_snapshot
from xds_server.publish.validation import ValidateModeValidator
from xds_server.snapshot.snapshot import Snapshot, short_name

#: Targets from the issue.
TARGET_ACK_S = {1_000: 1.0, 10_000: 2.0, 100_000: 20.0}
TARGET_RSS_MIB = {10_000: 150.0}
BASE_ROUTES = 10
STATUS_POLL_S = 0.01


def generate_config(n_routes: int, listener_port: int) -> dict[str, Any]:
    """One listener, one virtual host, ``n_routes`` routes over ``max(1, n/10)`` services."""
    n_services = max(1, n_routes // 10)
    services = [
        {
            "name": f"svc-{s:05d}",
            "endpoints": [{"address": "127.0.0.1", "port": 20_000 + s % 40_000}],
        }
        for s in range(n_services)
    ]
    routes: list[dict[str, Any]] = []
    for i in range(n_routes):
        svc = f"svc-{i % n_services:05d}"
        kind = i % 10
        if kind < 5:
            match: dict[str, Any] = {"prefix": f"/{svc}/r{i}/"}
        elif kind < 8:
            match = {"path": f"/{svc}/r{i}/exact"}
        else:
            match = {"regex": f"^/{svc}/r{i}/items/[0-9]+$"}
        routes.append({"name": f"r-{i}", "match": match, "service": svc})
    return {
        "listeners": [
            {
                "name": "public",
                "address": "127.0.0.1",
                "port": listener_port,
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
            }
        ],
        "services": services,
    }


@dataclass
class CompileTiming:
    parse_s: float
    compile_s: float
    total_s: float
    yaml_bytes: int


def limits_for(text: str) -> tuple[int, int]:
    """(max bytes, max YAML nodes) with room for ``text``: the defaults (32 MiB,
    3,000,000 nodes) take the 100,000-route file; larger sizes need more."""
    return (
        max(DEFAULT_MAX_CONFIG_BYTES, 2 * len(text.encode())),
        max(DEFAULT_LIMITS.max_nodes, 30 * text.count("\n")),
    )


def time_compile(text: str, repeat: int = 3) -> tuple[CompileTiming, Snapshot]:
    """Best of ``repeat`` (by total) for parse_config + compile_snapshot, in this process,
    with the cycle collector paused as in the compile worker."""
    best: CompileTiming | None = None
    snapshot: Snapshot | None = None
    for _ in range(repeat):
        with gc_paused():
            t0 = time.perf_counter()
            limits = replace(DEFAULT_LIMITS, max_nodes=limits_for(text)[1])
            loaded = parse_config(text, "bench.yaml", limits)
            t1 = time.perf_counter()
            snapshot = compile_snapshot(loaded.config)
            t2 = time.perf_counter()
        timing = CompileTiming(t1 - t0, t2 - t1, t2 - t0, len(text.encode()))
        if best is None or timing.total_s < best.total_s:
            best = timing
    assert best is not None and snapshot is not None
    return best, snapshot


def fleet_acked(status: dict[str, Any], snap: Snapshot) -> bool:
    """Whether some fleet Envoy has ACKed every type of ``snap`` at its version."""
    for envoy in status.get("envoys", []):
        types = envoy.get("types", {})
        if all(
            types.get(short_name(t), {}).get("acked_version") == snap.type_version(t)
            for t in snap.types
        ):
            return True
    return False


@dataclass
class E2ETiming:
    published_s: float
    acked_s: float
    rss_mib: float
    peak_rss_mib: float
    canary_validate_s: float | None
    cp_compile_s: float | None
    #: slowest /status answer from the file write to the fleet ACK: is the control plane
    #: answering while it compiles and publishes?
    max_status_s: float


def _metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    if count <= 0:
        return None
    return (after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)) / count


def time_end_to_end(text: str, snap: Snapshot, listener_port: int, timeout: float) -> E2ETiming:
    with cleanup() as stops, tempfile.TemporaryDirectory(prefix="bench-xds-scale-") as tmp:
        config_path = Path(tmp) / "gateway.yaml"
        base_text = yaml.safe_dump(generate_config(BASE_ROUTES, listener_port), sort_keys=False)
        write_text_atomic(config_path, base_text)
        _, base_snap = time_compile(base_text, repeat=1)
        max_bytes, max_nodes = limits_for(text)
        plane = ControlPlane(
            config_path,
            validator="canary",
            poll_interval=0.05,
            extra_args=("--max-config-bytes", str(max_bytes), "--max-config-nodes", str(max_nodes)),
        )
        stops.append(plane.stop)
        envoy = FleetEnvoy(plane.xds_port)
        stops.append(envoy.stop)
        wait_until(lambda: fleet_acked(plane.status(), base_snap), 30, "fleet Envoy ACK of base")
        time.sleep(0.5)  # let the start-up settle (canary and fleet streams idle)
        before = plane.metrics()

        published = acked = None
        max_status = 0.0
        t0 = time.perf_counter()
        write_text_atomic(config_path, text)
        deadline = t0 + timeout
        while acked is None:
            now = time.perf_counter()
            if now > deadline:
                raise BenchError(
                    f"no ACK within {timeout:g}s; status: {json.dumps(plane.status())[:2000]}"
                )
            asked = time.perf_counter()
            try:
                status = plane.status()
            except OSError:  # the admin HTTP shares the event loop; a busy loop may time out
                status = None
            max_status = max(max_status, time.perf_counter() - asked)
            if status is not None:
                stamp = time.perf_counter() - t0
                if status["config"]["errors"]:
                    raise BenchError(f"config rejected: {status['config']['errors']}")
                if published is None and status["config"]["version"] == snap.version:
                    published = stamp
                if fleet_acked(status, snap):
                    acked = stamp
                    published = published if published is not None else stamp
            time.sleep(STATUS_POLL_S)
        rss, peak = rss_kib(plane.pid)
        after = plane.metrics()
        assert published is not None
        return E2ETiming(
            published_s=published,
            acked_s=acked,
            rss_mib=rss / 1024,
            peak_rss_mib=peak / 1024,
            canary_validate_s=_metric_delta(before, after, "meshgate_config_validate_seconds"),
            cp_compile_s=_metric_delta(before, after, "meshgate_config_compile_seconds"),
            max_status_s=max_status,
        )


def time_validate_mode(snap: Snapshot) -> float:
    validator = ValidateModeValidator()
    t0 = time.perf_counter()
    objections = asyncio.run(validator.validate(snap))
    elapsed = time.perf_counter() - t0
    if objections:
        raise BenchError(f"envoy --mode validate rejected the config: {objections}")
    return elapsed


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_size(n: int, timeout: float, skip_validate_mode: bool) -> dict[str, Any]:
    listener_port = free_port()
    text = yaml.safe_dump(generate_config(n, listener_port), sort_keys=False)
    log(f"{n} routes: compile (best of 3) ...")
    compiled, snap = time_compile(text)
    log(f"{n} routes: end to end (control plane + canary + fleet Envoy) ...")
    e2e = time_end_to_end(text, snap, listener_port, timeout)
    validate_mode = None
    if not skip_validate_mode:
        log(f"{n} routes: envoy --mode validate ...")
        validate_mode = time_validate_mode(snap)
    target_ack = TARGET_ACK_S.get(n)
    target_rss = TARGET_RSS_MIB.get(n)
    return {
        "routes": n,
        "services": max(1, n // 10),
        "compile": asdict(compiled),
        "end_to_end": asdict(e2e),
        "validate_mode_s": validate_mode,
        "targets": {
            "compile_and_ack_s": target_ack,
            "ack_met": None if target_ack is None else e2e.acked_s < target_ack,
            "rss_mib": target_rss,
            "rss_met": None if target_rss is None else e2e.rss_mib < target_rss,
        },
    }


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def print_report(report: dict[str, Any]) -> None:
    print(f"meshgate xDS scale benchmark, {report['date']}, {report['machine']['cpus']} CPUs")
    print("validator: canary (default); control plane --poll-interval 0.05; /status every 10 ms")
    rows = []
    for r in report["results"]:
        c, e, t = r["compile"], r["end_to_end"], r["targets"]
        ack_target = (
            ""
            if t["compile_and_ack_s"] is None
            else (f" ({'ok' if t['ack_met'] else 'MISSED'} < {t['compile_and_ack_s']:g} s)")
        )
        rss_target = (
            ""
            if t["rss_mib"] is None
            else (f" ({'ok' if t['rss_met'] else 'MISSED'} < {t['rss_mib']:g})")
        )
        rows.append(
            [
                str(r["routes"]),
                f"{c['yaml_bytes'] / 1024:.0f} KiB",
                _s(c["parse_s"]),
                _s(c["compile_s"]),
                _s(c["total_s"]),
                _s(e["cp_compile_s"]),
                _s(e["published_s"]),
                _s(e["acked_s"]) + ack_target,
                f"{e['rss_mib']:.0f}{rss_target}",
                f"{e['peak_rss_mib']:.0f}",
                _s(e["canary_validate_s"]),
                _s(e["max_status_s"]),
                _s(r["validate_mode_s"]),
            ]
        )
    headers = [
        "routes", "yaml", "parse", "compile", "parse+compile", "worker", "published",
        "fleet ACK", "RSS MiB", "peak MiB", "canary", "max /status", "validate-mode",
    ]  # fmt: skip
    print(format_table(headers, rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default="100,1000,10000", help="route counts (100,1000,10000)")
    p.add_argument("--timeout", type=float, default=180.0, help="per-size ACK timeout, seconds")
    p.add_argument(
        "--skip-validate-mode", action="store_true", help="do not time envoy --mode validate"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes takes comma-separated integers, e.g. 100,1000,10000")
    if not args.sizes or min(args.sizes) < 1:
        p.error("--sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = [measure_size(n, args.timeout, args.skip_validate_mode) for n in args.sizes]
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
