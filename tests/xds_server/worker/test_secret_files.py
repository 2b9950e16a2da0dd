"""Secret files a compile read: watched, and part of "unchanged" (a rotated file is a change
even though the config is not), never shown."""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from pathlib import Path

import pytest

from meshgate.files import signature
from xds_server.worker.job import Compiled, CompileJob, Rejected, Unchanged, run_job
from xds_server.worker.secret_files import NO_SECRET_FILES, SecretFileReads, read_again

from .login_config import CONFIG, write_config

OLD, NEW = "hmac-0ld-value-4c1f9e2a7b", "hmac-n3w-value-9d3e8f1a2c"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MG_TEST_CLIENT_SECRET", "client-value")
    return write_config(tmp_path, hmac_key=OLD)


def test_secret_files_read_are_watched_and_remembered(config: Path) -> None:
    secret = str(config.parent / "keys" / "hmac.key")
    outcome = run_job(CompileJob(str(config)))
    assert isinstance(outcome, Compiled), outcome
    assert dict(outcome.watched)[secret] == signature(secret)
    assert outcome.secret_files.paths == (secret,)  # the environment variable is no file
    # what is remembered holds no value, and its digest is keyed (not a plain hash of it)
    remembered = pickle.dumps(outcome.secret_files)
    assert OLD.encode() not in remembered
    value = b"value\0" + OLD.encode()
    for plain in (hashlib.sha256(value), hashlib.blake2b(value, digest_size=16)):
        assert plain.hexdigest()[:32] != outcome.secret_files.digest
    assert outcome.secret_files.digest not in repr(outcome.secret_files)


def test_unchanged_only_while_the_secret_files_hold_what_they_held(config: Path) -> None:
    secret = config.parent / "keys" / "hmac.key"
    first = run_job(CompileJob(str(config)))
    assert isinstance(first, Compiled)

    def again() -> object:
        return run_job(
            CompileJob(str(config), known_digest=first.digest, known_secrets=first.secret_files)
        )

    os.utime(secret)  # touched, same value
    unchanged = again()
    assert isinstance(unchanged, Unchanged) and unchanged.secret_files == first.secret_files
    assert dict(unchanged.watched)[str(secret)] == signature(str(secret))
    secret.write_text(OLD)  # the trailing newline is not part of the value
    assert isinstance(again(), Unchanged)
    secret.write_text(NEW + "\n")  # rotated: compiled in full, with the config unchanged
    rotated = again()
    assert isinstance(rotated, Compiled) and rotated.digest == first.digest
    assert rotated.secret_files != first.secret_files
    # without what the last outcome read, the digest alone would have said "unchanged"
    assert isinstance(run_job(CompileJob(str(config), known_digest=first.digest)), Unchanged)


def test_a_missing_secret_file_is_watched_and_its_arrival_compiles(config: Path) -> None:
    secret = config.parent / "keys" / "hmac.key"
    secret.unlink()
    rejected = run_job(CompileJob(str(config)))
    assert isinstance(rejected, Rejected)
    assert dict(rejected.watched)[str(secret)] is None  # the watcher sees it appear
    known = CompileJob(
        str(config), known_digest=rejected.digest, known_secrets=rejected.secret_files
    )
    assert isinstance(run_job(known), Unchanged)  # still missing: the rejection stands
    secret.write_text(NEW)
    assert isinstance(run_job(known), Compiled)


def test_a_compile_that_reads_no_secret_file_remembers_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG.split("logins:")[0])
    outcome = run_job(CompileJob(str(path)))
    assert isinstance(outcome, Compiled) and outcome.secret_files == NO_SECRET_FILES


def test_the_reason_a_file_cannot_be_read_is_part_of_what_it_held(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    missing = read_again([str(secret)]).known()
    secret.write_text("")
    empty = read_again([str(secret)]).known()
    secret.write_text("x")
    reads = SecretFileReads()
    assert reads.read(secret) == "x"
    assert len({missing, empty, reads.known()}) == 3
    assert read_again([str(secret)]).known() == reads.known()


def test_a_secret_being_written_is_read_once_it_has_settled(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("")  # `echo new > s` has truncated it, the value is not written yet
    writer = threading.Timer(0.05, lambda: secret.write_text(NEW))
    writer.start()
    try:
        assert SecretFileReads(settle=1.0).read(secret) == NEW
    finally:
        writer.join()
