"""A config split across files: which files, in which order, merged how, located where.

Files are created for real in ``tmp_path``; hostile targets (FIFOs, /dev/zero, thousands of
files, include cycles) too. The exact texts of the mistakes are pinned by the fixtures of
``tests/fixtures/invalid_split``; here: the mechanics and the bounds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshgate.config_files import read_config_files
from meshgate.config_merge import LIST_KEYS, Origins, SourceText, merge
from meshgate.loader import ConfigError, load_config, parse_config
from meshgate.yaml_bounds import YamlLimits
from tests.paths import ROOT
from xds_server.publish.locate import located_in

LISTENER = """listeners:
  - name: public
    port: 8080
    virtual_hosts:
      - name: default
        routes:
          - {match: {prefix: /}, service: web}
"""
SERVICE = """services:
  - name: web
    endpoints: [{address: 10.0.0.1, port: 80}]
"""
POLICY = """issuers:
  - name: corp
    issuer: https://id.example.com
    audiences: [api]
    jwks: {url: "https://id.example.com/jwks.json"}
policies:
  - name: admins
    issuers: [corp]
"""


def files(directory: Path, **texts: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (directory / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return directory


def problems(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return [str(p) for p in info.value.report()]


def validate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,  # a FIFO in the directory must not hang it
        cwd=ROOT,
        check=False,
    )


# -- which files ----------------------------------------------------------------------------


def test_a_directory_is_its_yaml_files_in_name_order_and_nothing_else(tmp_path: Path) -> None:
    conf = files(
        tmp_path / "conf",
        b__yml=SERVICE,
        a__yaml=LISTENER,
        c__yaml=POLICY,
        notes__txt="not yaml",
        **{"__hidden__yaml": "listeners: [broken"},  # ".hidden.yaml": skipped
    )
    (conf / "sub").mkdir()
    (conf / "sub" / "x.yaml").write_text("listeners: [broken")  # not recursive
    read = read_config_files(conf)
    assert [Path(f.path).name for f in read.files] == ["a.yaml", "b.yml", "c.yaml"]
    assert read.problems == () and not read.unreadable
    loaded = load_config(conf)
    assert [p.name for p in loaded.config.policies] == ["admins"]
    assert loaded.source == str(conf) and loaded.files == tuple(f.path for f in read.files)


def test_kubernetes_configmap_layout_is_read_through_its_symlinks(tmp_path: Path) -> None:
    """A mounted ConfigMap: each key a symlink into ``..data``, itself a symlink to a
    timestamped directory; the dot entries are not config files."""
    conf = tmp_path / "conf"
    files(conf / "..2024_01_01", gateway__yaml=LISTENER + SERVICE, policies__yaml=POLICY)
    (conf / "..data").symlink_to("..2024_01_01")
    for name in ("gateway.yaml", "policies.yaml"):
        (conf / name).symlink_to(f"..data/{name}")
    loaded = load_config(conf)
    assert loaded.files == (str(conf / "gateway.yaml"), str(conf / "policies.yaml"))


def test_includes_follow_in_order_relative_to_the_including_file(tmp_path: Path) -> None:
    files(tmp_path / "teams", b__yaml=POLICY, a__yaml="roles: [{name: admin}]\n")
    files(tmp_path / "base", services__yaml=SERVICE)
    root = tmp_path / "gateway.yaml"
    root.write_text("include: [base/services.yaml, 'teams/*.yaml']\n" + LISTENER)
    loaded = load_config(root)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in loaded.files] == [
        "gateway.yaml",
        "base/services.yaml",
        "teams/a.yaml",
        "teams/b.yaml",
    ]
    assert [r.name for r in loaded.config.roles] == ["admin"]


def test_digest_covers_every_name_and_content_and_is_the_texts_for_one_file(
    tmp_path: Path,
) -> None:
    single = tmp_path / "one.yaml"
    single.write_text(LISTENER + SERVICE)
    text_digest = hashlib.sha256((LISTENER + SERVICE).encode()).hexdigest()[:12]
    assert read_config_files(single).digest == text_digest  # as status always showed it

    conf = files(tmp_path / "conf", a__yaml=LISTENER, b__yaml=SERVICE)
    first = read_config_files(conf).digest
    assert read_config_files(conf).digest == first
    (conf / "b.yaml").write_text(SERVICE + "\n")
    edited = read_config_files(conf).digest
    (conf / "b.yaml").rename(conf / "c.yaml")
    renamed = read_config_files(conf).digest
    (conf / "d.yaml").write_text("# nothing yet\n")
    added = read_config_files(conf).digest
    assert len({first, edited, renamed, added}) == 4


def test_every_path_looked_at_is_watched_with_its_signature(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml="include: [../extra/missing.yaml]\n" + LISTENER)
    read = read_config_files(conf)
    watched = dict(read.watched)
    assert watched[str(conf)] is not None  # the listing: files added or removed
    assert watched[str(conf / "a.yaml")] is not None
    missing = os.path.normpath(tmp_path / "extra" / "missing.yaml")
    assert watched[missing] is None  # created later: noticed
    assert read.unreadable


# -- merging and locating --------------------------------------------------------------------


def test_lists_are_joined_across_files_and_each_part_located_in_its_file(
    tmp_path: Path,
) -> None:
    conf = files(
        tmp_path / "conf",
        a__yaml=LISTENER + SERVICE,
        b__yaml="services:\n  - name: api\n  - name: db\n",
    )
    loaded = load_config(conf)
    assert [s.name for s in loaded.config.services] == ["web", "api", "db"]
    [db] = loaded.problems_at([(("services", 2, "name"), "x")])
    assert (db.file, db.line, db.column) == (str(conf / "b.yaml"), 3, 5)
    assert db.path == "services[1].name"  # the path in that file


def test_an_envoy_objection_is_located_in_the_file_that_wrote_it(tmp_path: Path) -> None:
    conf = files(
        tmp_path / "conf",
        a__yaml=LISTENER + SERVICE,
        b__yaml="services:\n  - name: api\n",
    )
    loaded = load_config(conf)
    [problem] = located_in("Error adding/updating cluster(s) api: bad", loaded)
    assert (problem.file, problem.path, problem.line) == (str(conf / "b.yaml"), "services[0]", 2)


def test_a_duplicate_name_names_both_files(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml=LISTENER + SERVICE, b__yaml="\n" + SERVICE)
    assert problems(conf) == [
        f"{conf / 'b.yaml'}:3:5: services[0].name: duplicate service name 'web' "
        f"(first defined at {conf / 'a.yaml'}:9)"
    ]


def test_a_single_file_keeps_its_index_wording(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(LISTENER + SERVICE + SERVICE.removeprefix("services:\n"))
    assert problems(path) == [
        f"{path}:11:5: services[1].name: duplicate service name 'web' (first defined at index 0)"
    ]


def test_a_key_other_than_a_list_is_written_in_one_file_only() -> None:
    """No such key exists in the model today (every top-level field is a list); the rule is
    there for the first one that will, and says where the first setting is."""
    a, b = SourceText("a.yaml", "mode: x\n"), SourceText("b.yaml", "\n\nmode: y\n")
    origins = Origins("conf", (a, b))
    merged, found = merge([(0, {"mode": "x"}), (1, {"mode": "y"})], origins, LIST_KEYS, {"mode"})
    assert merged == {"mode": "x"}
    [problem] = found
    assert str(problem) == (
        f"b.yaml:3:1: mode: already set in a.yaml:1; a top-level key other than the lists "
        f"({', '.join(LIST_KEYS)}) is written in one file only"
    )


def test_empty_files_of_a_directory_are_allowed_an_empty_single_file_is_not(
    tmp_path: Path,
) -> None:
    conf = files(tmp_path / "conf", a__yaml=LISTENER + SERVICE, b__yaml="# later\n", c__yaml="")
    assert len(load_config(conf).files) == 3
    single = tmp_path / "empty.yaml"
    single.write_text("")
    assert problems(single) == [f"{single}: the file is empty"]


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"{tmp_path}: the directory holds no config file (*.yaml, *.yml)"]


def test_include_in_text_without_a_path_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("include: [a.yaml]\n" + LISTENER, "t.yaml")
    assert [str(p) for p in info.value.problems] == [
        "t.yaml:1:10: include: files are included only when the config is read from a path"
    ]


def test_include_values_are_checked_where_written(tmp_path: Path) -> None:
    root = tmp_path / "gateway.yaml"
    root.write_text("include: {a: b}\n" + LISTENER + SERVICE)
    assert problems(root) == [
        f"{root}:1:10: include: expected a file path or a list of file paths (relative to "
        "this file)"
    ]


# -- bounds: bounded work, precise errors, nothing hangs -------------------------------------


def test_ten_thousand_files_stop_at_the_limit_without_reading_them_all(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    for i in range(10_000):
        (conf / f"f{i:05}.yaml").write_bytes(b"")
    read = read_config_files(conf, max_files=1000)
    assert read.files == () and read.unreadable  # refused while listing, before any read
    assert [str(p) for p in read.problems] == [
        f"{conf}: the config is made of more than 1000 files (raise the limit with "
        "--max-config-files)"
    ]


def test_the_file_limit_counts_includes_too(tmp_path: Path) -> None:
    files(tmp_path / "parts", a__yaml="", b__yaml="", c__yaml="")
    root = tmp_path / "gateway.yaml"
    root.write_text("include: ['parts/*.yaml']\n")
    assert problems(root, max_files=3) == [
        f"{root}:1:11: include[0]: the config is made of more than 3 files (raise the limit "
        "with --max-config-files)"
    ]


def test_byte_limit_is_for_all_files_together(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml=LISTENER, b__yaml=SERVICE)
    size = len(LISTENER.encode())
    assert problems(conf, max_bytes=size + 10) == [
        f"{conf / 'b.yaml'}: the config's files together are more than {size + 10} bytes "
        "(raise the limit with --max-config-bytes)"
    ]
    big = tmp_path / "big"
    big.mkdir()
    with (big / "huge.yaml").open("wb") as f:  # sparse: nothing written
        f.truncate(10**9)
    assert problems(big) == [
        f"{big / 'huge.yaml'}: the file is 1000000000 bytes, more than the limit of "
        "33554432 bytes (raise it with --max-config-bytes)"
    ]


def test_node_limit_is_for_all_files_together(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml="[1, 2, 3]\n", b__yaml="[1, 2, 3]\n")
    limits = YamlLimits(max_nodes=6)  # each file has 4 nodes: fine alone, not together
    assert problems(conf, limits=limits) == [
        f"{conf / 'b.yaml'}: with the files before it, the config has more than 6 YAML nodes "
        "(keys, values and collections)"
    ]


def test_fifo_and_dev_zero_in_a_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml=LISTENER + SERVICE)
    os.mkfifo(conf / "b.yaml")
    (conf / "c.yaml").symlink_to("/dev/zero")
    result = validate(conf)
    assert result.returncode == 1
    kinds = "not a regular file; a config is read only from a regular file (or a symlink to one)"
    assert result.stderr == (
        f"error: {conf / 'b.yaml'}: is a FIFO (named pipe), {kinds}\n"
        f"error: {conf / 'c.yaml'}: is a character device, {kinds}\n"
    )


def test_a_symlink_to_a_sibling_is_one_file_not_two(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml=LISTENER + SERVICE)
    (conf / "b.yaml").symlink_to("a.yaml")
    assert problems(conf) == [
        f"{conf / 'b.yaml'}: the same file as '{conf / 'a.yaml'}' (a symbolic link to it?); "
        "each file is part of the config once"
    ]


def test_includes_nest_at_most_sixteen_deep(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}.yaml").write_text(f"include: f{i + 1}.yaml\n")
    (tmp_path / "f20.yaml").write_text(LISTENER + SERVICE)
    assert problems(tmp_path / "f0.yaml") == [
        f"{tmp_path / 'f16.yaml'}:1:10: include: includes nest more than 16 files deep"
    ]


def test_a_self_include_is_a_cycle(tmp_path: Path) -> None:
    root = tmp_path / "gateway.yaml"
    root.write_text("include: [./gateway.yaml]\n" + LISTENER + SERVICE)
    assert problems(root) == [
        f"{root}:1:11: include[0]: include cycle: '{root}' -> '{root}'",
    ]


def test_validate_accepts_a_directory_and_says_how_many_files(tmp_path: Path) -> None:
    conf = files(tmp_path / "conf", a__yaml=LISTENER, b__yaml=SERVICE, c__yaml=POLICY)
    result = validate(conf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{conf}: ok (3 file(s), 1 listener(s), 1 route(s), ")


def test_a_million_include_entries_cost_a_bounded_amount(tmp_path: Path) -> None:
    """Each entry names a file, so more entries than the file limit is refused at once; a
    list of empty entries is 100 problems and a count, not a million objects."""
    many = tmp_path / "many.yaml"
    many.write_text("include: [" + ", ".join(["a.yaml"] * 200_000) + "]\n")
    assert problems(many) == [
        f"{many}:1:11: include[0]: the config's includes name more than 1000 files (raise the "
        "limit with --max-config-files)"
    ]
    empty = tmp_path / "empty.yaml"
    empty.write_text("include: [" + ", ".join(["''"] * 100_000) + "]\n" + LISTENER + SERVICE)
    found = problems(empty)
    assert len(found) == 101 and found[-1] == f"{empty}: ... and 99900 more problems"
    assert found[0] == f"{empty}:1:11: include[0]: empty; name a file to include"
