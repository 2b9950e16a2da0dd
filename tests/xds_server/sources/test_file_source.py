"""The file watcher reports, without reading the file: it may have changed, or it is gone."""

from __future__ import annotations

import os
from pathlib import Path

from xds_server.sources.base import ConfigChanged, SourceError, SourceEvent
from xds_server.sources.file import FileConfigSource


def test_a_change_an_unchanged_tick_a_disappearance_and_a_return(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("a: 1\n")
    events: list[SourceEvent] = []
    source = FileConfigSource(path)
    source.check_once(events.append)
    [first] = events
    assert isinstance(first, ConfigChanged)
    assert (first.source, first.path) == (f"file:{path}", str(path))

    source.check_once(events.append)  # same stat: nothing
    assert len(events) == 1

    path.write_text("a: 22\n")
    source.check_once(events.append)
    assert isinstance(events[-1], ConfigChanged) and events[-1].revision != first.revision

    path.unlink()
    source.check_once(events.append)
    source.check_once(events.append)  # reported once, not on every tick
    assert len(events) == 3
    gone = events[-1]
    assert isinstance(gone, SourceError) and gone.digest == "missing"
    assert [str(p) for p in gone.problems] == [f"{path}: file not found"]

    path.write_text("a: 1\n")
    source.check_once(events.append)
    assert isinstance(events[-1], ConfigChanged)


def test_a_chmod_alone_is_a_change(tmp_path: Path) -> None:
    """Making an unreadable file readable changes only its ctime; it must be looked at again."""
    path = tmp_path / "gateway.yaml"
    path.write_text("a: 1\n")
    events: list[SourceEvent] = []
    source = FileConfigSource(path)
    source.check_once(events.append)
    st = path.stat()
    os.chmod(path, 0o600)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only ctime moves
    source.check_once(events.append)
    assert [type(e) for e in events] == [ConfigChanged, ConfigChanged]
