"""The SQLite store under SIGKILL: every write that returned survives, the file stays sound."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ext_authz.stores.sqlite import SqliteKeyStore

# Writes keys as fast as it can (creates, and revokes of earlier ones), printing each key id
# after the store returned: a printed line is an acknowledged write.
WRITER = r"""
import sys
from pathlib import Path
from ext_authz.keys.hashing import KeyHasher
from ext_authz.keys.lifecycle import KeyBook
from ext_authz.stores.sqlite import SqliteKeyStore
book = KeyBook(SqliteKeyStore(Path(sys.argv[1])), KeyHasher(b"k" * 32))
n = 0
while True:
    issued = book.create("load", "acme", ("a",))
    print("add", issued.record.key_id, flush=True)
    n += 1
    if n % 3 == 0:
        book.revoke(issued.record.key_id)
        print("revoke", issued.record.key_id, flush=True)
"""


@pytest.mark.parametrize("after", [5, 40, 120])
def test_a_sigkill_mid_write_loses_nothing_acknowledged(tmp_path: Path, after: int) -> None:
    db = tmp_path / "keys.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.stdout is not None
    acked: list[tuple[str, str]] = []
    for line in proc.stdout:
        op, kid = line.split()
        acked.append((op, kid))
        if len(acked) >= after:
            os.kill(proc.pid, signal.SIGKILL)  # while it is writing the next one
            break
    acked += [tuple(ln.split()) for ln in proc.stdout.read().splitlines()]  # type: ignore[misc]
    assert proc.wait(10) == -signal.SIGKILL
    check = sqlite3.connect(str(db))
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    store = SqliteKeyStore(db)
    try:
        for op, kid in acked:
            rec = store.get(kid)
            assert rec is not None, f"acknowledged {op} of {kid} lost"
            if op == "revoke":
                assert rec.revoked_at is not None, f"acknowledged revoke of {kid} lost"
    finally:
        store.close()
