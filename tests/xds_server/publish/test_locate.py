"""Envoy's objections traced back to the config: which listener, service, route or value."""

from __future__ import annotations

from meshgate.loader import parse_config
from xds_server.publish.locate import located_problems, trace

TEXT = """\
listeners:
  - name: public
    port: 8080
    virtual_hosts:
      - name: default
        routes:
          - name: big
            match: {regex: "^/a{90}$"}
            service: alpha
          - match: {prefix: /}
            service: beta
  - name: second
    port: 8081
    virtual_hosts:
      - name: other
        routes:
          - match: {prefix: /, headers: [{name: x-id, regex: "[0-9]{90}"}]}
            service: beta
services:
  - name: alpha
    endpoints: [{address: 127.0.0.1, port: 9001}]
  - name: beta
    endpoints: [{address: 127.0.0.1, port: 9002}]
"""
CONFIG = parse_config(TEXT, "gateway.yaml").config
# The loader refuses what Envoy's default RE2 limits refuse (a{1001}, a program over 100), so
# Envoy objects to a regex only where its limits are stricter than that (a lower
# re2.max_program_size.error_level): the messages below are worded as RE2 words such errors.


def test_a_regex_envoy_refuses_is_found_within_the_named_route_table() -> None:
    message = "Envoy rejected RDS 'public': invalid repetition size: {90}"
    assert trace(message, CONFIG) == [
        ("listeners", 0, "virtual_hosts", 0, "routes", 0, "match", "regex")
    ]
    [problem] = located_problems(message, CONFIG, "gateway.yaml", TEXT)
    assert str(problem) == (
        "gateway.yaml:8:21: listeners[0].virtual_hosts[0].routes[0].match.regex: "
        "Envoy rejected RDS 'public': invalid repetition size: {90}"
    )


def test_without_a_named_resource_every_regex_that_fits_is_reported() -> None:
    # envoy --mode validate names nothing: both route tables hold a {1001}
    message = "Envoy rejected the config: invalid repetition size: {90}"
    assert trace(message, CONFIG) == [
        ("listeners", 0, "virtual_hosts", 0, "routes", 0, "match", "regex"),
        ("listeners", 1, "virtual_hosts", 0, "routes", 0, "match", "headers", 0, "regex"),
    ]


def test_envoys_own_listener_and_cluster_wording() -> None:
    lds = (
        "Error adding/updating listener(s) second: cannot bind '127.0.0.1:8081': "
        "Address already in use"
    )
    assert trace(lds, CONFIG) == [("listeners", 1)]
    [problem] = located_problems(lds, CONFIG, "gateway.yaml", TEXT)
    assert (problem.path, problem.line, problem.column) == ("listeners[1]", 12, 5)
    both = "Error adding/updating listener(s) public: bad; second: worse"
    assert trace(both, CONFIG) == [("listeners", 0), ("listeners", 1)]
    cds = "Error adding/updating cluster(s) beta: some reason"
    assert trace(cds, CONFIG) == [("services", 1)]
    assert located_problems(cds, CONFIG, "gateway.yaml", TEXT)[0].line == 22


def test_a_quoted_route_or_virtual_host_name_narrows_it_down() -> None:
    # a generated route name (virtual host name + index) maps back to its place
    message = "Envoy rejected RDS 'public': route 'default-1': something Envoy disliked"
    assert trace(message, CONFIG) == [("listeners", 0, "virtual_hosts", 0, "routes", 1)]
    # the same name in another listener's table is out of scope
    message = "Envoy rejected RDS 'second': virtual host 'other' is wrong"
    assert trace(message, CONFIG) == [("listeners", 1, "virtual_hosts", 0)]


def test_what_cannot_be_traced_gets_no_location() -> None:
    assert trace("Envoy rejected CDS: something general", CONFIG) == []
    assert trace("Envoy rejected RDS 'nope': x", CONFIG) == []
    assert located_problems("something else", CONFIG, "gateway.yaml", TEXT) == []
    # without the file's text, the path is still given
    [problem] = located_problems("Error adding/updating cluster(s) alpha: x", CONFIG, "g", None)
    assert (problem.path, problem.line) == ("services[0]", None)
