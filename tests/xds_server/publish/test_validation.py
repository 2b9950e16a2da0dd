"""What `envoy --mode validate` says, reduced to the reason an operator needs."""

from __future__ import annotations

from xds_server.publish.validation import envoy_reason

PREFIX = "[2026-11-26 18:31:25.484][1895][critical][main] [source/server/x.cc:76] "


def test_a_one_line_reason_loses_the_log_prefix_and_file() -> None:
    out = (
        PREFIX + "error initializing configuration '/tmp/a/b.json': bad repetition operator: {2}{3}"
    )
    assert envoy_reason(out) == "bad repetition operator: {2}{3}"


def test_a_proto_constraint_keeps_the_reason_not_the_dump() -> None:
    out = "\n".join(
        [
            PREFIX + "error initializing configuration '/tmp/b.json': goo.gle/debugstr    ",
            'stat_prefix: "public"',
            "route_config {",
            '  name: "public"',
            "}",
            ": goo.gle/debugonly Proto constraint validation failed (HeaderValueValidationError"
            '.Value: value does not match regex pattern "^[^\\x00\\n\\r]*$")',
        ]
    )
    assert envoy_reason(out) == (
        "Proto constraint validation failed (HeaderValueValidationError.Value: value does not "
        'match regex pattern "^[^\\x00\\n\\r]*$")'
    )


def test_unrecognised_output_is_passed_on() -> None:
    assert envoy_reason("something else entirely\n") == "something else entirely"


def test_envoy_failing_without_a_reason_says_what_happened() -> None:
    from xds_server.publish.validation import validate_mode_verdict

    assert validate_mode_verdict(0, "") == []
    assert validate_mode_verdict(3, "  \n") == [
        "envoy --mode validate exited with code 3 and printed nothing"
    ]
    assert validate_mode_verdict(-9, "") == [
        "envoy --mode validate was killed by signal 9 (SIGKILL)"
    ]
    assert validate_mode_verdict(1, PREFIX + "error initializing configuration 'b.json': x") == [
        "Envoy rejected the config: x"
    ]
