"""Resilience policies: retries, circuit breakers, outlier detection, health checks, balancing.

All of it is enforced by Envoy itself (route retry policies, cluster thresholds, outlier
detection, active health checks, load-balancer settings); nothing here costs a Python hop.
Defaults follow what an operator of an Envoy-based gateway expects: retries only where asked
for, and a retry budget whenever retries are on, so that retries cannot multiply an outage.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from .values import Duration, Model, not_bool

RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
]
LbPolicy = Literal["round_robin", "least_request", "ring_hash", "maglev", "random"]
#: Policies that honour a route's hash policy (session affinity needs one of them).
HASH_LB_POLICIES: frozenset[str] = frozenset({"ring_hash", "maglev"})

Count = Annotated[int, Field(ge=1), BeforeValidator(not_bool)]
StatusCode = Annotated[int, Field(ge=100, le=599), BeforeValidator(not_bool)]
Percent = Annotated[float, Field(ge=0, le=100), BeforeValidator(not_bool)]


class Backoff(Model):
    """Exponential backoff with jitter between retries (Envoy's retry_back_off)."""

    base_interval: Duration = timedelta(milliseconds=25)
    max_interval: Duration | None = Field(
        default=None, description="cap of the backoff; default 10x base_interval (Envoy's)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.base_interval.total_seconds() <= 0:
            raise ValueError("base_interval must be greater than 0")
        if self.max_interval is not None and self.max_interval < self.base_interval:
            raise ValueError("max_interval must not be shorter than base_interval")
        return self


def _default_retry_on() -> list[RetryOn]:
    return ["5xx", "reset", "connect-failure"]


class RetryPolicy(Model):
    """When and how often Envoy retries a request to the upstream."""

    retry_on: Annotated[list[RetryOn], Field(min_length=1)] = Field(
        default_factory=_default_retry_on
    )
    num_retries: Annotated[int, Field(ge=0, le=10), BeforeValidator(not_bool)] = 2
    per_try_timeout: Duration | None = None
    retriable_status_codes: list[StatusCode] = Field(default_factory=list)
    backoff: Backoff | None = None

    @model_validator(mode="after")
    def _codes_need_condition(self) -> RetryPolicy:
        wants_codes = "retriable-status-codes" in self.retry_on
        if wants_codes and not self.retriable_status_codes:
            raise ValueError(
                "retry_on has 'retriable-status-codes' but retriable_status_codes is empty"
            )
        if self.retriable_status_codes and not wants_codes:
            raise ValueError(
                "retriable_status_codes is set but retry_on lacks 'retriable-status-codes'"
            )
        if self.per_try_timeout is not None and self.per_try_timeout.total_seconds() <= 0:
            raise ValueError("per_try_timeout must be greater than 0")
        return self


class RetryBudget(Model):
    """At most ``budget_percent`` of active requests may be retries (Envoy's retry_budget)."""

    budget_percent: Percent = 20.0
    min_retry_concurrency: Count = 3


class CircuitBreakers(Model):
    """Envoy's per-cluster thresholds; beyond them requests fail fast with a JSON 503."""

    max_connections: Count | None = None
    max_pending_requests: Count | None = None
    max_requests: Count | None = None
    max_retries: Count | None = None
    retry_budget: RetryBudget | None = None

    @model_validator(mode="after")
    def _budget_or_max(self) -> CircuitBreakers:
        if self.retry_budget is not None and self.max_retries is not None:
            raise ValueError(
                "set either max_retries or retry_budget: Envoy ignores max_retries when a "
                "retry budget is configured"
            )
        return self


class OutlierDetection(Model):
    """Eject endpoints that keep failing, for ``base_ejection_time`` (growing per ejection)."""

    consecutive_5xx: Count | None = 5
    consecutive_gateway_errors: Count | None = None
    interval: Duration = timedelta(seconds=10)
    base_ejection_time: Duration = timedelta(seconds=30)
    max_ejection_percent: Annotated[int, Field(ge=0, le=100), BeforeValidator(not_bool)] = 10


class HealthCheck(Model):
    """Active HTTP health checks: an endpoint failing them gets no traffic until it passes."""

    path: Annotated[str, Field(pattern=r"^/")]
    interval: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=1)
    healthy_threshold: Count = 2
    unhealthy_threshold: Count = 3
    expected_statuses: list[StatusCode] = Field(
        default_factory=list, description="default: any 2xx (Envoy's: 200-299)"
    )
    host: str | None = None

    @model_validator(mode="after")
    def _positive(self) -> HealthCheck:
        if self.interval.total_seconds() <= 0 or self.timeout.total_seconds() <= 0:
            raise ValueError("interval and timeout must be greater than 0")
        return self


class ConnectionPool(Model):
    """Upstream connection reuse: idle timeout and requests per connection."""

    idle_timeout: Duration | None = None
    max_requests_per_connection: Count | None = None
