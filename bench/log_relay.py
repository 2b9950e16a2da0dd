"""What relaying a child's output costs ``meshgate up``, per line, in each output format.

``meshgate up`` reads every access-log line Envoy writes and writes it out again
(meshgate/runtime/log_relay.py): unchanged as JSON, or rendered as text for a terminal
(meshgate/runtime/log_text.py). This measures the relay's CPU time per line: a child writes
realistic access-log lines as fast as it can into the relay, the relay writes to /dev/null,
and the CPU time of this process (the relay's threads; the child is another process) is
divided by the number of lines.

    python bench/log_relay.py [--lines 200000] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

from meshgate.runtime.log_relay import LogRelay, Sink
from meshgate.runtime.log_text import TextFormatter

LINE = json.dumps(
    {
        "authority": "127.0.0.1:8080",
        "bytes_in": 0,
        "bytes_out": 372,
        "client": "127.0.0.1",
        "details": "via_upstream",
        "duration_ms": 3,
        "flags": "-",
        "listener": "127.0.0.1:8080",
        "method": "GET",
        "path": "/api/hello",
        "protocol": "HTTP/1.1",
        "request_id": "8a73a1ae-4d6f-4a5c-9a55-0f6a4bb0d2e1",
        "route": "api",
        "status": 200,
        "time": "2026-11-26T17:24:43.248Z",
        "upstream_cluster": "echo-a",
        "upstream_host": "127.0.0.1:9101",
        "upstream_ms": "2",
        "user_agent": "curl/7.88.1",
        "variant": None,
    },
    separators=(",", ":"),
)

# Writes the lines in 64 KiB batches, as Envoy's access-log flush does.
WRITER = """
import os, sys
line, n = sys.argv[1].encode() + b"\\n", int(sys.argv[2])
per = max(1, 65536 // len(line))
batch = line * per
for _ in range(n // per):
    os.write(1, batch)
os.write(1, line * (n % per))
"""


def measure(lines: int, text: bool) -> dict[str, float]:
    devnull = os.open(os.devnull, os.O_WRONLY)
    relay = LogRelay(Sink(devnull), Sink(devnull))
    fmt = functools.partial(TextFormatter().format, "envoy", "access") if text else None
    w_out, w_err, logs = relay.attach(fmt, None)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, LINE, str(lines)], stdout=w_out, stderr=w_err
    )
    os.close(w_out)
    os.close(w_err)
    child.wait()
    logs.wait_closed(600)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    relay.close()
    os.close(devnull)
    return {
        "lines": lines,
        "relay_cpu_us_per_line": cpu / lines * 1e6,
        "lines_per_s": lines / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    a = p.parse_args()
    results = {mode: measure(a.lines, mode == "text") for mode in ("json", "text")}
    if a.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'format':<6} {'lines':>9} {'relay CPU/line':>15} {'lines/s':>10}")
    for mode, r in results.items():
        print(
            f"{mode:<6} {r['lines']:>9.0f} {r['relay_cpu_us_per_line']:>12.2f} us "
            f"{r['lines_per_s']:>10.0f}"
        )


if __name__ == "__main__":
    main()
