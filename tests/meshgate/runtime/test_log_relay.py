"""The log relay of ``meshgate up``: whole lines only, never two lines spliced together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from meshgate.runtime.log_relay import ChildLogs, LogRelay, Sink

# A child that writes long JSON lines in small pieces (a flush after each): exactly what
# splices lines when several processes share one output.
WRITER = r"""
import json, os, random, sys
name, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(name)
for i in range(count):
    line = json.dumps({"writer": name, "seq": i, "pad": "x" * rng.randint(10, 40000)}) + "\n"
    data = line.encode()
    while data:
        cut = rng.randint(1, 3000)
        os.write(1, data[:cut])
        data = data[cut:]
print(json.dumps({"writer": name, "stderr": "bye"}), file=sys.stderr)
"""


class Collector(threading.Thread):
    """Reads everything from a pipe: our relay's output, as a terminal or a log shipper would."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.r, self.w = os.pipe()
        self.data = bytearray()

    def run(self) -> None:
        while chunk := os.read(self.r, 1 << 16):
            self.data += chunk


def test_many_concurrent_writers_with_long_lines_never_splice() -> None:
    out, err = Collector(), Collector()
    out.start()
    err.start()
    relay = LogRelay(Sink(out.w), Sink(err.w))
    writers, per_writer = 8, 40
    procs: list[subprocess.Popen[bytes]] = []
    handles: list[ChildLogs] = []
    for n in range(writers):
        w_out, w_err, logs = relay.attach(None, None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WRITER, f"w{n}", str(per_writer)],
                stdout=w_out,
                stderr=w_err,
            )
        )
        os.close(w_out)
        os.close(w_err)
        handles.append(logs)

    def ours() -> None:  # our own messages go to the same output meanwhile
        for i in range(200):
            relay.stdout.write(
                json.dumps({"writer": "us", "seq": i, "pad": "y" * 9000}).encode() + b"\n"
            )

    threads = [threading.Thread(target=ours) for _ in range(2)]
    for t in threads:
        t.start()
    for p in procs:
        assert p.wait(60) == 0
    for t in threads:
        t.join()
    assert all(h.wait_closed(10) for h in handles)
    relay.close()
    os.close(out.w)
    os.close(err.w)
    out.join(10)
    err.join(10)

    lines = bytes(out.data).split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]  # every line is one JSON object
    seqs: dict[str, list[int]] = {}
    for r in records:
        seqs.setdefault(r["writer"], []).append(r["seq"])
    for n in range(writers):
        assert seqs[f"w{n}"] == list(range(per_writer))  # all there, in order
    assert sorted(seqs["us"]) == sorted(list(range(200)) * 2)
    assert sorted(json.loads(line)["writer"] for line in err.data.splitlines()) == sorted(
        f"w{n}" for n in range(writers)
    )
    assert handles[0].stderr_tail() == ['{"writer": "w0", "stderr": "bye"}']


def test_formatted_streams_and_an_unterminated_last_line(tmp_path: Path) -> None:
    out_file = (tmp_path / "out").open("wb")
    relay = LogRelay(Sink(out_file.fileno()), Sink(out_file.fileno()))
    w_out, w_err, logs = relay.attach(lambda line: b"<" + line + b">\n", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os; os.write(1, b'a\\nb\\n'); os.write(1, b'no newline')"],
        stdout=w_out,
        stderr=w_err,
    )
    os.close(w_out)
    os.close(w_err)
    assert proc.wait(10) == 0
    assert logs.wait_closed(10)
    relay.close()
    out_file.close()
    assert (tmp_path / "out").read_bytes() == b"<a>\n<b>\n<no newline>\n"


def test_a_reader_that_went_away_does_not_stop_the_relay() -> None:
    r, w = os.pipe()
    os.close(r)
    sink = Sink(w)
    sink.write(b"nobody reads this\n")  # EPIPE: dropped, no exception
    assert sink.broken
    os.close(w)


def test_a_full_disk_drops_output_but_the_relay_keeps_draining_the_children() -> None:
    """``meshgate up > access.log`` on a full disk: the write fails with ENOSPC. The relay
    thread used to die of it, after which a child blocks on its next line once its pipe is
    full; now the lines are dropped and the child writes on."""
    full = os.open("/dev/full", os.O_WRONLY)
    sink = Sink(full)
    sink.write(b"lost\n")
    assert sink.dropped == 5 and not sink.broken
    relay = LogRelay(sink, sink)
    w_out, w_err, logs = relay.attach(None, None)
    # 8 MB in lines, far more than the pipe holds: it only finishes if the relay drains
    writer = "import os\nline = b'x' * 1023 + b'\\n'\nfor _ in range(8192): os.write(1, line)\n"
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=w_out, stderr=w_err)
    os.close(w_out)
    os.close(w_err)
    try:
        assert proc.wait(30) == 0
        assert logs.wait_closed(10)
        assert sink.dropped >= 8 << 20
    finally:
        proc.kill()
        relay.close()
        os.close(full)


def test_a_formatter_that_fails_lets_the_lines_through_as_written(tmp_path: Path) -> None:
    def broken(line: bytes) -> bytes:
        raise RuntimeError("formatter bug")

    out_file = (tmp_path / "out").open("wb")
    relay = LogRelay(Sink(out_file.fileno()), Sink(out_file.fileno()))
    w_out, w_err, logs = relay.attach(broken, None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os; os.write(1, b'a\\n'); os.write(1, b'b\\n')"],
        stdout=w_out,
        stderr=w_err,
    )
    os.close(w_out)
    os.close(w_err)
    assert proc.wait(10) == 0
    assert logs.wait_closed(10)
    relay.close()
    out_file.close()
    assert (tmp_path / "out").read_bytes() == b"a\nb\n"
