"""The ext_authz service's own decisions/s, measured directly with many concurrent callers.

Starts ``python -m ext_authz`` on a fresh SQLite store holding one key, then runs ``wrk``
(one thread, N keep-alive connections) against its check port three ways: a valid key
(allow: hash check, headers out), a garbage key (refused by the checksum, no lookup) and an
unknown well-formed key (refused after a dictionary miss). Through Envoy the route also pays
Envoy's ext_authz filter; that end-to-end ratio to ``plain`` comes with the compiler feature.

    python bench/ext_authz_service.py --duration 6 --rounds 3 --connections 50
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import BenchError, cleanup, format_table, require_wrk, wait_until
from proxy import WrkRun, run_wrk

from ext_authz.keys.format import mint
from ext_authz.keys.hashing import load_or_create_hash_key
from ext_authz.keys.lifecycle import KeyBook
from ext_authz.stores.sqlite import SqliteKeyStore
from meshgate.cli.control_plane import http_get
from meshgate.proxy.envoy_process import free_port
from meshgate.runtime.processes import stop_process


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=50)
    a = p.parse_args()
    try:
        wrk = require_wrk()
        with tempfile.TemporaryDirectory() as tmp, cleanup() as stops:
            store_path, hash_file = Path(tmp) / "keys.db", Path(tmp) / "hash.key"
            store = SqliteKeyStore(store_path)
            key = KeyBook(store, load_or_create_hash_key(hash_file)).create("bench", "t", ("a",))
            store.close()
            port, admin = free_port(), free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "ext_authz", "--store", str(store_path),
                 "--hash-key-file", str(hash_file), "--listen", f"127.0.0.1:{port}",
                 "--admin-address", f"127.0.0.1:{admin}", "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            stops.append(lambda: stop_process(proc, 5))
            wait_until(
                lambda: http_get(f"http://127.0.0.1:{admin}/readyz", 1)[0] == 200 or None,
                20,
                "ext_authz ready",
            )
            cases = {
                "valid key (200)": key.text,
                "garbage key (401, checksum)": "mgk_" + "x" * 50,
                "unknown key (401, lookup)": mint().text,
            }
            rows = []
            for name, presented in cases.items():
                runs: list[WrkRun] = []
                url = f"http://127.0.0.1:{port}/check"
                run_wrk(wrk, url, a.connections, 2, {"x-api-key": presented})  # warm-up
                for _ in range(a.rounds):
                    runs.append(
                        run_wrk(wrk, url, a.connections, a.duration, {"x-api-key": presented})
                    )
                rows.append(
                    [
                        name,
                        f"{statistics.median(r.requests_per_s for r in runs):.0f}",
                        f"{statistics.median(r.p50_ms for r in runs):.2f}",
                        f"{statistics.median(r.p99_ms for r in runs):.2f}",
                    ]
                )
            print(format_table(["case", "decisions/s", "p50 ms", "p99 ms"], rows))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
