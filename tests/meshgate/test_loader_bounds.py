"""Bounded work for any YAML text: depth, nodes after alias expansion, aliases, problems.

The fixtures in ``fixtures/invalid/yaml_*`` pin the exact messages for small cases; these
tests run the inputs of issue 6 at full size (``[`` x 100,000, the 9-level alias bomb) through
the real ``meshgate validate`` subprocess, with a timeout so a hang fails instead of freezing
the run, and check the limits at their boundaries.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshgate.loader import ConfigError, YamlLimits, parse_config, print_problems
from meshgate.problems import MAX_PROBLEMS
from meshgate.yaml_bounds import check_events
from meshgate.yaml_locate import duplicate_keys, positions
from meshgate.yaml_read import read_yaml
from tests.paths import ROOT
from xds_server.app import ControlPlane, Settings


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def alias_bomb(levels: int) -> str:
    lines = ['a: &a [{k: 1, k: 2},"lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def problems(text: str, limits: YamlLimits | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        if limits is None:
            parse_config(text, "t.yaml")
        else:
            parse_config(text, "t.yaml", limits)
    return [str(p) for p in info.value.report()]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("flow sequences", "[" * 100_000, "1:101: nesting deeper than 100 levels"),
        ("flow mappings", "{a: " * 20_000, "1:401: nesting deeper than 100 levels"),
        ("block list", "".join(" " * i + "-\n" for i in range(3000)), "101:101: nesting deeper"),
        ("compact block list", "- " * 3000, "1:201: nesting deeper than 100 levels"),
        ("alias bomb, 7 levels", alias_bomb(7), "5:32: aliases expand to more than 100000"),
        ("alias bomb, 9 levels", alias_bomb(9), "5:32: aliases expand to more than 100000"),
    ],
)
def test_issue_inputs_give_one_precise_line_from_validate(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    result = validate(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:{expected}"), name


def test_alias_bomb_message_names_the_alias() -> None:
    assert problems(alias_bomb(9)) == [
        "t.yaml:5:32: aliases expand to more than 100000 nodes (alias *d at line 5, column 32)"
    ]


def test_limits_hold_exactly_at_their_boundary() -> None:
    limits = YamlLimits(max_depth=5, max_nodes=50, max_aliases=3, max_alias_nodes=20)
    read_yaml("a: [[[[1]]]]", "t", limits)  # 5 levels: the top mapping and 4 lists
    assert problems("a: [[[[[1]]]]]", limits) == ["t.yaml:1:8: nesting deeper than 5 levels"]

    read_yaml("[" + ",".join(["1"] * 49) + "]", "t", limits)  # 49 scalars + the list
    assert problems("[" + ",".join(["1"] * 50) + "]", limits) == [
        "t.yaml:1:100: the YAML has more than 50 nodes (keys, values and collections)"
    ]

    read_yaml("- &a 1\n- *a\n- *a\n- *a\n", "t", limits)
    assert problems("- &a 1\n- *a\n- *a\n- *a\n- *a\n", limits) == [
        "t.yaml:5:3: more than 3 aliases"
    ]


def test_alias_expansion_is_counted_on_the_dag_in_linear_time() -> None:
    """Each anchor's expanded size is remembered: 60 levels of 2 aliases (2^60 nodes) are
    refused after a few hundred events, not after walking the expansion."""
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 60)]
    [message] = problems("\n".join(lines))
    assert message.startswith("t.yaml:") and "aliases expand to more than 100000 nodes" in message


def test_alias_allowance_grows_with_the_text() -> None:
    """A block shared by many routes is fine: aliases may add 10x the nodes written out."""
    limits = YamlLimits(max_alias_nodes=10, alias_ratio=2)
    shared = "d: &d {k: v, l: w}\n"  # 5 nodes per alias; 9 nodes written before the aliases
    read_yaml(shared + "x: [*d,*d,*d]", "t", limits)  # 15 <= max(10, 2 * 9)
    with pytest.raises(ConfigError) as info:
        read_yaml(shared + "x: [*d,*d,*d,*d]", "t", limits)  # 20 > 18
    assert str(info.value) == (
        "t:2:14: aliases expand to more than 18 nodes (alias *d at line 2, column 14)"
    )


def test_merge_keys_in_a_large_config_are_within_the_limits() -> None:
    defaults = "defaults: &defaults {service: web, timeout: 5s, retries: {num_retries: 2}}\n"
    routes = "".join(
        f"          - {{<<: *defaults, match: {{prefix: /r{i}/}}}}\n" for i in range(3000)
    )
    text = (
        "x-shared:\n  "
        + defaults
        + "listeners:\n  - name: public\n    port: 8080\n    virtual_hosts:\n"
        + "      - name: default\n        routes:\n"
        + routes
        + "services:\n  - name: web\n"
    )
    # the only problem is the unknown top-level key holding the anchor, not the aliases
    assert problems(text) == [
        "t.yaml:2:3: x-shared: unknown field (check the spelling; see docs/configuration.md)"
    ]


def test_recursive_alias_is_refused_before_anything_walks_it() -> None:
    assert problems("a: &a {b: *a}\n") == [
        "t.yaml:1:11: alias *a refers to a collection that contains it (anchor &a at line 1, "
        "column 4); a config cannot be a recursive structure"
    ]


def test_deep_nesting_through_an_alias() -> None:
    deep = "[" * 60 + "x" + "]" * 60
    [message] = problems(f"d: &d {deep}\ne: {'[' * 50}*d{']' * 50}\n")
    assert message == "t.yaml:2:54: nesting deeper than 100 levels (through alias *d)"


def test_a_flat_list_of_a_million_scalars_is_refused_while_streaming() -> None:
    """Building it as a node tree would cost ~400 MB; the scan keeps nothing."""
    text = "[" + "a," * 3_000_000 + "a]"
    [message] = problems(text)
    assert message == (
        "t.yaml:1:6000000: the YAML has more than 3000000 nodes (keys, values and collections)"
    )


def test_duplicate_key_in_an_aliased_mapping_is_reported_once() -> None:
    text = "m: &m {k: 1, k: 2}\nx: [*m, *m, *m, *m]\n"
    assert problems(text) == [
        "t.yaml:1:14: m.k: duplicate key (YAML keeps only the last one)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("&k listeners : []\n*k : []\n", "t.yaml:2:1: listeners: duplicate key"),
        ("m: {&k a: 1, b: 2}\nn: {a: 1, *k : 2}\n", "t.yaml:2:11: n.a: duplicate key"),
        ("? [&k a]\n: 1\nb: {*k : 1, a: 2}\n", "t.yaml:1:3: invalid YAML: found unhashable"),
    ],
)
def test_an_alias_used_as_a_key_is_located_as_its_scalar(text: str, expected: str) -> None:
    """An anchored scalar repeated as a key through its alias is a duplicate key like any
    other: it used to give a ConfigError with no problem in it (``validate`` printed nothing
    and exited 1)."""
    [found] = problems(text)
    assert found.startswith(expected), found


def test_problem_lists_are_cut_with_the_exact_count(capsys: pytest.CaptureFixture[str]) -> None:
    keys = "".join(f"k{i}: 1\nk{i}: 2\n" for i in range(250))
    with pytest.raises(ConfigError) as info:
        parse_config(keys, "t.yaml")
    err = info.value
    assert len(err.problems) == MAX_PROBLEMS and err.omitted == 150
    assert str(err).splitlines()[-1] == "t.yaml: ... and 150 more problems"
    print_problems(err)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[0] == "error: t.yaml:2:1: k0: duplicate key (YAML keeps only the last one)"
    assert lines[-1] == "... and 150 more problems"


def test_schema_errors_are_cut_too() -> None:
    routes = "".join(f"          - {{match: {{prefix: r{i}}}, service: web}}\n" for i in range(300))
    text = (
        "listeners:\n  - name: public\n    port: 8080\n    virtual_hosts:\n"
        "      - name: default\n        routes:\n" + routes + "services:\n  - name: web\n"
    )
    lines = problems(text)
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[0] == (
        "t.yaml:7:22: listeners[0].virtual_hosts[0].routes[0].match.prefix: "
        "must start with '/', got 'r0'"
    )
    assert lines[-1] == "t.yaml: ... and 200 more problems"


def test_a_huge_file_with_a_syntax_error_is_not_reparsed_in_pure_python() -> None:
    """PyYAML's pure-Python parser words errors for small files only; a large file gets
    libyaml's message (as precise), instead of seconds of pure-Python parsing."""
    text = "a: [" + "x, " * 200_000 + "\n}\n"
    [message] = problems(text)
    assert message.startswith("t.yaml:2:") and "invalid YAML" in message


def test_scan_with_the_pure_python_parser_is_iterative() -> None:
    """The wording fallback scans with PyYAML's own parser: iterative, same limits."""
    with pytest.raises(ConfigError) as info:
        check_events(yaml.parse("[" * 100_000, Loader=yaml.SafeLoader), "t.yaml")
    assert str(info.value) == "t.yaml:1:101: nesting deeper than 100 levels"


def test_huge_integer_is_a_located_problem() -> None:
    [message] = problems("a: " + "9" * 5000 + "\n")
    assert message == (
        "t.yaml:1:4: invalid YAML: cannot read '999999999999999999999999…' (5000 chars) here: "
        "an integer of more than 4300 digits"
    )


async def test_control_plane_status_gets_the_bounded_list(tmp_path: Path) -> None:
    """The running gateway: the alias bomb is one problem, 250 duplicate keys are 100 and
    the count of the rest, in /status as in validate."""
    path = tmp_path / "gateway.yaml"
    plane = ControlPlane(Settings(str(path), validator="none"))
    path.write_text(alias_bomb(9), encoding="utf-8")
    await plane.check_config()
    [error] = plane.status()["config"]["errors"]
    assert error["message"].startswith("aliases expand to more than 100000 nodes")
    assert (error["line"], error["column"]) == (5, 32)

    path.write_text("".join(f"k{i}: 1\nk{i}: 2\n" for i in range(250)), encoding="utf-8")
    await plane.check_config()
    errors = plane.status()["config"]["errors"]
    assert len(errors) == MAX_PROBLEMS + 1
    assert errors[-1] == {
        "file": str(path),
        "line": None,
        "column": None,
        "path": "",
        "message": "... and 150 more problems",
        "origin": None,
    }


def test_positions_come_from_one_streaming_pass() -> None:
    """Scalars by their key, collections by their first line, a missing path by the deepest
    part that exists, an alias where it is written; complex keys are skipped."""
    text = (
        "a: &x {b: 1}\n"  # 1
        "? [complex, key]\n"  # 2
        ": {b: 2}\n"  # 3
        "c:\n"  # 4
        "  - 10\n"  # 5
        "  - {d: 20}\n"  # 6
        "e: *x\n"  # 7
    )
    found = positions(
        text,
        [("a", "b"), ("a",), ("c", 1, "d"), ("c", 1), ("c", 5), ("c", 1, "zz"), ("e",), ()],
    )
    assert found == {
        ("a", "b"): (1, 8),
        ("a",): (1, 4),
        ("c", 1, "d"): (6, 6),
        ("c", 1): (6, 5),
        ("c", 5): (5, 3),  # no item 5: the list
        ("c", 1, "zz"): (6, 5),  # no key zz: the mapping
        ("e",): (7, 1),
        (): (1, 1),
    }
    assert duplicate_keys("a: {b: 1, b: 2}\nc: [{d: 1, d: 2, d: 3}]\n") == (
        [(("a", "b"), (1, 11)), (("c", 0, "d"), (2, 12)), (("c", 0, "d"), (2, 18))],
        3,
    )
