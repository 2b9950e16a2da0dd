"""Upstream services and their endpoints."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from .resilience import (
    CircuitBreakers,
    ConnectionPool,
    HealthCheck,
    LbPolicy,
    OutlierDetection,
    RetryPolicy,
)
from .values import Duration, IpAddress, Model, Name, Port, not_bool


class Endpoint(Model):
    address: IpAddress
    port: Port
    weight: Annotated[int, Field(ge=1, le=128), BeforeValidator(not_bool)] | None = None


class Service(Model):
    """An upstream: static endpoints here, more from discovery sources later."""

    name: Name
    endpoints: list[Endpoint] = Field(default_factory=list)
    connect_timeout: Duration = Field(default=timedelta(seconds=1))
    protocol: Literal["http1", "http2"] = "http1"
    lb_policy: LbPolicy = "round_robin"
    retries: RetryPolicy | None = Field(
        default=None, description="default retry policy of every route to this service"
    )
    circuit_breakers: CircuitBreakers | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    connection_pool: ConnectionPool | None = None

    @field_validator("connect_timeout")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError("connect_timeout must be greater than 0")
        return v
