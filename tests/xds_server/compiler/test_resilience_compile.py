"""Unit tests for the resilience compiler: which retry policy a route gets, which services get
the automatic retry budget, status ranges; and the examples of docs/resilience.md.

The compiled forms as a whole are pinned by the golden cases ``tests/golden/resilience_*``
and judged by real Envoy in ``tests/integration/test_resilience.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from meshgate.config import GatewayConfig
from meshgate.loader import ConfigError, load_config, parse_config
from tests.paths import ROOT, TESTS
from tests.test_docs_examples import examples
from xds_server.compiler import LOCAL_REPLY_MESSAGES, compile_snapshot
from xds_server.compiler.features.resilience import (
    AUTOMATIC_RETRY_BUDGET,
    circuit_breakers,
    effective_retries,
    retried_services,
    status_ranges,
)
from xds_server.publish.validation import ValidateModeValidator

DOCS = ROOT / "docs"
GUIDE = DOCS / "resilience.md"
GUIDE_EXAMPLES = examples(GUIDE.read_text(encoding="utf-8"))
GOLDEN = sorted((TESTS / "golden").glob("resilience_*.yaml"))


def _config(routes: list[dict[str, Any]], services: list[dict[str, Any]]) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "listeners": [
                {
                    "name": "public",
                    "port": 8080,
                    "virtual_hosts": [{"name": "default", "routes": routes}],
                }
            ],
            "services": services,
        }
    )


def _route(service: str, **extra: Any) -> dict[str, Any]:
    return {"match": {"prefix": f"/{service}/"}, "service": service, **extra}


SPLIT_ROUTE = {
    "match": {"prefix": "/split/"},
    "split": {
        "variants": [
            {"service": "stable", "weight": 90},
            {"service": "canary", "weight": 10},
        ]
    },
}


def test_the_guide_has_examples() -> None:
    assert len(GUIDE_EXAMPLES) >= 6


@pytest.mark.parametrize(
    ("line", "text"), GUIDE_EXAMPLES, ids=[f"line{n}" for n, _ in GUIDE_EXAMPLES]
)
def test_guide_example_loads_and_compiles(line: int, text: str) -> None:
    source = f"{GUIDE.name}:{line}"
    try:
        loaded = parse_config(text, source)
    except ConfigError as exc:
        pytest.fail(f"the example at {source} does not load:\n{exc}")
    compile_snapshot(loaded.config)  # raises if the resources are inconsistent


def test_route_retries_win_over_the_service_default() -> None:
    config = _config(
        [
            _route("api", retries={"num_retries": 5}),
            _route("api"),
            _route("other"),
        ],
        [{"name": "api", "retries": {"num_retries": 1}}, {"name": "other"}],
    )
    own, inherited, none = config.listeners[0].virtual_hosts[0].routes
    assert effective_retries(own, config).num_retries == 5  # type: ignore[union-attr]
    assert effective_retries(inherited, config).num_retries == 1  # type: ignore[union-attr]
    assert effective_retries(none, config) is None


def test_a_split_retries_only_by_its_own_policy() -> None:
    services = [{"name": "stable", "retries": {}}, {"name": "canary", "retries": {}}]
    config = _config([SPLIT_ROUTE], services)
    [split] = config.listeners[0].virtual_hosts[0].routes
    assert effective_retries(split, config) is None


def test_retried_services_include_split_variants_and_service_defaults() -> None:
    config = _config(
        [
            {**SPLIT_ROUTE, "retries": {"num_retries": 1}},
            _route("plain"),
            _route("off", retries={"num_retries": 0}),
        ],
        [
            {"name": "stable"},
            {"name": "canary"},
            {"name": "plain"},
            {"name": "off"},
            {"name": "unrouted", "retries": {}},  # its own default makes it a retry target
            {"name": "disabled", "retries": {"num_retries": 0}},
        ],
    )
    assert retried_services(config) == {"stable", "canary", "unrouted"}


def test_retried_services_follow_the_config_they_are_asked_about() -> None:
    """The per-config memo must never answer for another config."""
    first = _config([_route("api", retries={})], [{"name": "api"}])
    second = _config([_route("api")], [{"name": "api"}])
    assert retried_services(first) == {"api"}
    assert retried_services(second) == frozenset()
    assert retried_services(first) == {"api"}


def test_budget_only_where_retries_have_no_limit() -> None:
    assert circuit_breakers(None, retried=False) is None
    automatic = circuit_breakers(None, retried=True)
    assert automatic is not None
    [thresholds] = automatic.thresholds
    assert thresholds.retry_budget.budget_percent.value == AUTOMATIC_RETRY_BUDGET.budget_percent
    assert thresholds.retry_budget.min_retry_concurrency.value == 3
    assert not thresholds.HasField("max_requests")


def test_status_ranges_merge_consecutive_codes() -> None:
    ranges = [(r.start, r.end) for r in status_ranges([204, 200, 201, 202, 418, 200])]
    assert ranges == [(200, 203), (204, 205), (418, 419)]
    assert status_ranges([]) == []


def test_breaker_message_is_documented() -> None:
    """The 503 body an open breaker produces is quoted in both docs; keep them in step."""
    message = dict(LOCAL_REPLY_MESSAGES)["UO"]
    for doc in ("configuration.md", "resilience.md"):
        assert f'"message": "{message}"' in (DOCS / doc).read_text(encoding="utf-8")


@pytest.mark.integration
@pytest.mark.parametrize("case", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_envoy_accepts_every_compiled_form(case: Path) -> None:
    """The goldens hold every field in every form (both outlier detectors, status ranges, each
    lb policy, pool options beside HTTP/1.1 and HTTP/2); Envoy itself must accept them."""
    snapshot = compile_snapshot(load_config(case).config)
    assert asyncio.run(ValidateModeValidator().validate(snapshot)) == []


def test_other_endpoint_predicate_is_on_by_default_and_can_be_turned_off() -> None:
    from meshgate.config.resilience import RetryPolicy
    from xds_server.compiler.features.resilience import retry_policy

    default = retry_policy(RetryPolicy())
    assert [p.name for p in default.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert default.host_selection_retry_max_attempts == 3
    off = retry_policy(RetryPolicy(other_endpoint=False))
    assert list(off.retry_host_predicate) == [] and off.host_selection_retry_max_attempts == 0
