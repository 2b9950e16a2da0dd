"""The file watcher reports, without reading the file: it may have changed, or it is gone."""

from __future__ import annotations

import os
from pathlib import Path

from meshgate.config_files import read_config_files
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


def test_a_config_directory_notices_files_added_removed_and_edited(tmp_path: Path) -> None:
    """A file added or removed changes the directory's own stat; an edit in place changes
    only the file's, so the files the worker read are watched once it reports them."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.yaml").write_text("a: 1\n")
    events: list[SourceEvent] = []
    source = FileConfigSource(conf)
    source.check_once(events.append)
    assert len(events) == 1

    (conf / "b.yaml").write_text("b: 1\n")
    source.check_once(events.append)
    assert len(events) == 2  # added

    source.track(read_config_files(conf).watched)  # what the compile reported
    source.check_once(events.append)
    assert len(events) == 2  # nothing moved since it was read

    with (conf / "a.yaml").open("a") as f:  # in place: the directory's stat stays
        f.write("c: 3\n")
    source.check_once(events.append)
    assert len(events) == 3 and isinstance(events[-1], ConfigChanged)
    assert events[-1].path == str(conf)
    source.check_once(events.append)
    assert len(events) == 3  # once per change

    (conf / "b.yaml").unlink()
    source.check_once(events.append)
    assert len(events) == 4  # removed


def test_a_file_edited_while_the_worker_read_it_is_noticed(tmp_path: Path) -> None:
    """The signatures come from the worker's read: an edit after that read but before the
    watcher hears of the file must not be lost."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.yaml").write_text("a: 1\n")
    source = FileConfigSource(conf)
    events: list[SourceEvent] = []
    source.check_once(events.append)
    read = read_config_files(conf).watched  # the worker reads...
    (conf / "a.yaml").write_text("a: 22\n")  # ...an edit lands...
    source.track(read)  # ...then its outcome arrives
    source.check_once(events.append)
    assert [type(e) for e in events] == [ConfigChanged, ConfigChanged]


def test_an_included_file_that_appears_is_noticed(tmp_path: Path) -> None:
    root = tmp_path / "gateway.yaml"
    root.write_text("include: [later.yaml]\n")
    source = FileConfigSource(root)
    events: list[SourceEvent] = []
    source.check_once(events.append)
    source.track(read_config_files(root).watched)  # later.yaml: missing, watched
    source.check_once(events.append)
    assert len(events) == 1
    (tmp_path / "later.yaml").write_text("roles: []\n")
    source.check_once(events.append)
    assert len(events) == 2
