"""Resilience policies: retries, circuit breakers, outlier detection, health checks, balancing.

All of it is enforced by Envoy itself (route retry policies, cluster thresholds, outlier
detection, active health checks, load-balancer settings); nothing here costs a Python hop.
Defaults follow what an operator of an Envoy-based gateway expects: retries only where asked
for, and a retry budget whenever retries are on, so that retries cannot multiply an outage.

Durations that Envoy requires to be positive are checked per field (not per model), so an
error points at the line that holds the bad value.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from meshgate.redact import show

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


def _positive(value: timedelta | None, info: ValidationInfo) -> timedelta | None:
    """Envoy rejects a zero duration for these fields (``gt: 0`` in its protos)."""
    if value is not None and value.total_seconds() <= 0:
        raise ValueError(f"{info.field_name} must be greater than 0")
    return value


class Backoff(Model):
    """Exponential backoff with jitter between retries (Envoy's retry_back_off)."""

    base_interval: Duration = timedelta(milliseconds=25)
    max_interval: Duration | None = Field(
        default=None, description="cap of the backoff; default 10x base_interval (Envoy's)"
    )

    _base_positive = field_validator("base_interval")(_positive)

    @field_validator("max_interval")
    @classmethod
    def _ordered(cls, v: timedelta | None, info: ValidationInfo) -> timedelta | None:
        base = info.data.get("base_interval")
        if v is not None and base is not None and v < base:
            raise ValueError("max_interval must not be shorter than base_interval")
        return v


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
    other_endpoint: bool = Field(
        default=True,
        description="retry on an endpoint not tried yet for this request (costs ~5 % CPU per "
        "request on the route, retried or not)",
    )

    _per_try_positive = field_validator("per_try_timeout")(_positive)

    @field_validator("retriable_status_codes")
    @classmethod
    def _codes_need_condition(cls, v: list[int], info: ValidationInfo) -> list[int]:
        retry_on = info.data.get("retry_on")
        if v and retry_on is not None and "retriable-status-codes" not in retry_on:
            raise ValueError(
                "retriable_status_codes is set but retry_on lacks 'retriable-status-codes', "
                "so these codes would never be retried"
            )
        return v

    @model_validator(mode="after")
    def _condition_needs_codes(self) -> RetryPolicy:
        if "retriable-status-codes" in self.retry_on and not self.retriable_status_codes:
            raise ValueError(
                "retry_on has 'retriable-status-codes' but retriable_status_codes is empty"
            )
        return self

    @property
    def active(self) -> bool:
        """Whether this policy retries at all (``num_retries: 0`` turns retries off)."""
        return self.num_retries > 0


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

    @field_validator("retry_budget")
    @classmethod
    def _budget_or_max(cls, v: RetryBudget | None, info: ValidationInfo) -> RetryBudget | None:
        if v is not None and info.data.get("max_retries") is not None:
            raise ValueError(
                "set either max_retries or retry_budget: Envoy ignores max_retries when a "
                "retry budget is configured"
            )
        return v


class OutlierDetection(Model):
    """Eject endpoints that keep failing, for ``base_ejection_time`` (growing per ejection)."""

    consecutive_5xx: Count | None = Field(
        default=5, description="null turns the consecutive-5xx detector off"
    )
    consecutive_gateway_errors: Count | None = None
    interval: Duration = timedelta(seconds=10)
    base_ejection_time: Duration = timedelta(seconds=30)
    max_ejection_percent: Annotated[int, Field(ge=0, le=100), BeforeValidator(not_bool)] = 10

    _durations_positive = field_validator("interval", "base_ejection_time")(_positive)

    @model_validator(mode="after")
    def _some_detector(self) -> OutlierDetection:
        if self.consecutive_5xx is None and self.consecutive_gateway_errors is None:
            raise ValueError(
                "consecutive_5xx and consecutive_gateway_errors are both off: nothing would "
                "ever be ejected"
            )
        return self


class HealthCheck(Model):
    """Active HTTP health checks: an endpoint failing them gets no traffic until it passes."""

    path: str
    interval: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=1)
    healthy_threshold: Count = 2
    unhealthy_threshold: Count = 3
    expected_statuses: list[StatusCode] = Field(
        default_factory=list, description="default: any 2xx (Envoy's: 200-299)"
    )
    host: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="the Host header of each check; default: the service name"
    )

    _durations_positive = field_validator("interval", "timeout")(_positive)

    @field_validator("path")
    @classmethod
    def _starts_with_slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must start with '/', got {show(v)}")
        return v


class ConnectionPool(Model):
    """Upstream connection reuse: idle timeout and requests per connection."""

    idle_timeout: Duration | None = Field(
        default=None, description="close an upstream connection unused this long; 0 = never"
    )
    max_requests_per_connection: Count | None = None
