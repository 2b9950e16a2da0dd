"""The meaning of a policy: path patterns and role inheritance (meshgate/config/access.py)."""

from __future__ import annotations

import pytest
import re2

from meshgate.config import GatewayConfig
from meshgate.config.access import RoleError, RoleGraph, effective_policy, parse_pattern
from meshgate.config.identity import Permission, Role

#: (pattern, path, matches case-sensitively, matches ignoring case)
PATTERNS = [
    ("/orders", "/orders", True, True),
    ("/orders", "/orders/", False, False),
    ("/orders", "/Orders", False, True),
    ("/orders", "/ordersx", False, False),
    ("/orders/", "/orders/", True, True),
    ("/orders/", "/orders", False, False),
    ("/", "/", True, True),
    ("/", "/a", False, False),
    ("/**", "/", True, True),
    ("/**", "/anything/at/all", True, True),
    ("/orders/**", "/orders", True, True),
    ("/orders/**", "/orders/", True, True),
    ("/orders/**", "/orders/1/items", True, True),
    ("/orders/**", "/ordersx", False, False),
    ("/orders/**", "/ORDERS/1", False, True),
    ("/orders/*", "/orders/1", True, True),
    ("/orders/*", "/orders", False, False),
    ("/orders/*", "/orders/", False, False),
    ("/orders/*", "/orders/1/items", False, False),
    ("/orders/*/items", "/orders/1/items", True, True),
    ("/orders/*/items", "/orders/1/2/items", False, False),
    ("/orders/*/items", "/orders//items", False, False),
    ("/orders/*/**", "/orders/1", True, True),
    ("/orders/*/**", "/orders/1/items/2", True, True),
    ("/orders/*/**", "/orders", False, False),
    ("/*", "/x", True, True),
    ("/*", "/", False, False),
    ("/a.b/*", "/a.b/c", True, True),
    ("/a.b/*", "/axb/c", False, False),  # '.' is literal
    ("/v1/(x)/*", "/v1/(x)/y", True, True),
]


@pytest.mark.parametrize(("pattern", "path", "sensitive", "insensitive"), PATTERNS)
def test_pattern_matches(pattern: str, path: str, sensitive: bool, insensitive: bool) -> None:
    parsed = parse_pattern(pattern)
    assert parsed.matches(path) is sensitive
    assert parsed.matches(path, case_sensitive=False) is insensitive


#: (pattern, path, an upstream may take the path for the pattern): case, path parameters and
#: one trailing slash aside. What a deny rule refuses (``PathPattern.matches_loosely``).
LOOSE = [
    ("/orders/*/refund", "/orders/7/refund", True),
    ("/orders/*/refund", "/orders/7/refund/", True),  # Express, Spring MVC < 6
    ("/orders/*/refund", "/orders/7/Refund", True),  # Express, IIS
    ("/orders/*/refund", "/orders/7/refund;jsessionid=1", True),  # Tomcat, Jetty
    ("/orders/*/refund", "/orders;a/7;b/REFUND;c/", True),
    ("/orders/*/refund", "/orders/7/refunds", False),
    ("/orders/*/refund", "/orders/7/refund/x", False),
    ("/orders/*/refund", "/orders/7/refund//", False),
    ("/orders/*/refund", "/orders//refund", False),
    ("/orders/*/refund", "/orders/7/refund.json", False),
    ("/admin", "/admin/", True),
    ("/admin", "/ADMIN;x", True),
    ("/admin", "/administrator", False),
    ("/admin", "/admin;x/y", False),
    ("/admin/", "/admin", True),
    ("/admin/**", "/admin;x", True),
    ("/admin/**", "/Admin;x/users/1", True),
    ("/admin/**", "/adminx/users", False),
    ("/admin/**", "/admin_/users", False),
    ("/a;b/c", "/a;b/c", True),
    ("/a;b/c", "/a;b;x/c", True),
    ("/a;b/c", "/a/c", False),
    ("/", "/", True),
    ("/", "/;x", False),
    ("/**", "/anything;x/at/ALL/", True),
    ("/*", "/x;y/", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), LOOSE)
def test_loose_matches(pattern: str, path: str, expected: bool) -> None:
    parsed = parse_pattern(pattern)
    assert parsed.matches_loosely(path) is expected
    assert (re2.fullmatch(parsed.loose_regex(), path) is not None) is expected


@pytest.mark.parametrize(("pattern", "path", "sensitive", "insensitive"), PATTERNS)
def test_loose_covers_every_path_the_pattern_means(
    pattern: str, path: str, sensitive: bool, insensitive: bool
) -> None:
    parsed = parse_pattern(pattern)
    if insensitive:
        assert parsed.matches_loosely(path)
    assert parsed.matches_loosely(path) is (re2.fullmatch(parsed.loose_regex(), path) is not None)


def test_pattern_parts() -> None:
    assert parse_pattern("/a/*/**") == parse_pattern("/a/*/**")
    parsed = parse_pattern("/a/*/**")
    assert (parsed.segments, parsed.rest, parsed.has_wildcard) == (("a", "*"), True, True)
    assert parse_pattern("/**").base() == ""
    assert parse_pattern("/a/b/").segments == ("a", "b", "")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("orders", "starts with '/'"),
        ("/a b", "no whitespace"),
        ("/a#b", "'#'"),
        ("/a/**/b", "'**' (any rest of the path) can only be the last segment"),
        ("/**/**", "'**' (any rest of the path) can only be the last segment"),
        ("/a*", "it cannot be part of one ('a*')"),
        ("/a/./b", "'.' and '..' segments never match"),
        ("//a", "an empty segment ('//') never matches"),
        ("/a//**", "an empty segment ('//') never matches"),
    ],
)
def test_pattern_mistakes(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_pattern(pattern)
    assert reason in str(info.value)


def _role(name: str, inherits: tuple[str, ...] = (), paths: tuple[str, ...] = ()) -> Role:
    permissions = [Permission(paths=list(paths))] if paths else []
    return Role(name=name, inherits=list(inherits), permissions=permissions)


GRAPH = RoleGraph.of(
    [
        _role("reader", paths=("/read",)),
        _role("writer", ("reader",), ("/write",)),
        _role("auditor", ("reader",), ("/audit",)),
        _role("admin", ("writer", "auditor"), ("/admin",)),
        _role("root", ("admin",)),
        _role("guest"),
    ]
)


@pytest.mark.parametrize(
    ("role", "lineage", "heirs", "paths"),
    [
        ("reader", ["reader"], ["reader", "writer", "auditor", "admin", "root"], ["/read"]),
        ("writer", ["writer", "reader"], ["writer", "admin", "root"], ["/write", "/read"]),
        (
            "admin",
            ["admin", "writer", "reader", "auditor"],
            ["admin", "root"],
            ["/admin", "/write", "/read", "/audit"],
        ),
        (
            "root",
            ["root", "admin", "writer", "reader", "auditor"],
            ["root"],
            ["/admin", "/write", "/read", "/audit"],
        ),
        ("guest", ["guest"], ["guest"], []),
    ],
)
def test_inheritance_flattened(
    role: str, lineage: list[str], heirs: list[str], paths: list[str]
) -> None:
    assert list(GRAPH.lineage(role)) == lineage
    assert list(GRAPH.heirs(role)) == heirs
    assert [p for perm in GRAPH.permissions(role) for p in perm.paths] == paths


def test_inherited_permission_counted_once() -> None:
    # admin reaches reader through writer and through auditor
    assert [p.paths for p in GRAPH.permissions("admin")].count(["/read"]) == 1


@pytest.mark.parametrize(
    ("roles", "ask", "message"),
    [
        ([_role("a", ("a",))], "a", "role inheritance cycle: a -> a"),
        ([_role("a", ("b",)), _role("b", ("a",))], "a", "role inheritance cycle: a -> b -> a"),
        (
            [_role("x", ("a",)), _role("a", ("b",)), _role("b", ("c",)), _role("c", ("a",))],
            "x",
            "role inheritance cycle: a -> b -> c -> a",
        ),
        ([_role("a", ("ghost",))], "a", "unknown role 'ghost'"),
        ([], "nobody", "unknown role 'nobody'"),
    ],
)
def test_graph_refuses_cycles_and_unknown_roles(roles: list[Role], ask: str, message: str) -> None:
    graph = RoleGraph.of(roles)
    for method in (graph.lineage, graph.heirs, graph.permissions):
        with pytest.raises(RoleError) as info:
            method(ask)
        assert str(info.value) == message


def test_heirs_refuse_a_cycle_below() -> None:
    graph = RoleGraph.of([_role("base"), _role("a", ("base", "b")), _role("b", ("a",))])
    with pytest.raises(RoleError, match="cycle"):
        graph.heirs("base")


def test_effective_policy() -> None:
    config = GatewayConfig.model_validate(
        {
            "listeners": [
                {
                    "name": "l",
                    "port": 8080,
                    "virtual_hosts": [
                        {
                            "name": "v",
                            "policy": "site",
                            "routes": [
                                {"match": {"prefix": "/own"}, "policy": "own", "service": "s"},
                                {"match": {"prefix": "/pub"}, "public": True, "service": "s"},
                                {"match": {"prefix": "/"}, "service": "s"},
                            ],
                        },
                        {
                            "name": "w",
                            "domains": ["w"],
                            "routes": [{"match": {"prefix": "/"}, "service": "s"}],
                        },
                    ],
                }
            ]
        }
    )
    v, w = config.listeners[0].virtual_hosts
    assert [effective_policy(v, r) for r in v.routes] == ["own", None, "site"]
    assert effective_policy(w, w.routes[0]) is None
