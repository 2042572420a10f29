"""Every setting of the three services, read from the environment in one place.

Each service gets a frozen dataclass built by ``from_env()``; tests build them
directly with explicit values and never touch ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

GATEWAY = "gateway"
ORDER_SERVICE = "order-service"
PAYMENT_SERVICE = "payment-service"

DEFAULT_PORTS = {GATEWAY: 8000, ORDER_SERVICE: 8001, PAYMENT_SERVICE: 8002}


NumberT = TypeVar("NumberT", int, float)


class SettingsError(ValueError):
    """A variable in the environment has a value the services cannot use."""


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _number(
    env: Mapping[str, str], name: str, default: NumberT, low: NumberT, high: NumberT, parse: Callable[[str], NumberT]
) -> NumberT:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        noun = "a whole number" if parse is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {noun}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number(env, name, default, low, high, int)


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, float)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = _text(env, name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name}={value!r} must start with http:// or https://")
    return value


def _resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """Parse OTEL_RESOURCE_ATTRIBUTES (``key=value,key=value``) strictly."""
    raw = env.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    attributes: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"OTEL_RESOURCE_ATTRIBUTES has {pair!r}, expected key=value")
        attributes[key.strip()] = value.strip()
    return attributes


@dataclass(frozen=True)
class TelemetrySettings:
    """What ``configure_telemetry`` needs; the OTLP exporters also read their own OTEL_* variables."""

    service_name: str
    service_version: str = "0.1.0"
    service_namespace: str = "shop"
    deployment_environment: str = "local"
    extra_resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sdk_disabled: bool = False
    otlp_endpoint: str = "http://localhost:4318"
    log_level: str = "INFO"
    # How long shutdown may spend flushing buffered telemetry before giving up.
    shutdown_timeout_s: float = 5.0
    # Batch export period for spans and logs. The SDK's 5 s lets a batch grow to hundreds of
    # records whose encoding holds the GIL for tens of ms and stalls requests behind it;
    # 200 ms exports small batches often (make bench: p99 at a fixed rate drops by about half).
    span_export_delay_ms: int = 200
    log_export_delay_ms: int = 200

    @classmethod
    def from_env(cls, default_service_name: str, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = os.environ if env is None else env
        resource = _resource_attributes(env)
        # OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES, as the spec says.
        service_name = _text(env, "OTEL_SERVICE_NAME", resource.pop("service.name", default_service_name))
        log_level = _text(env, "LOG_LEVEL", "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"LOG_LEVEL={log_level!r} must be DEBUG, INFO, WARNING or ERROR")
        return cls(
            service_name=service_name,
            service_version=resource.pop("service.version", _text(env, "SERVICE_VERSION", "0.1.0")),
            service_namespace=resource.pop("service.namespace", "shop"),
            deployment_environment=resource.pop("deployment.environment.name", "local"),
            extra_resource_attributes=resource,
            sdk_disabled=_bool(env, "OTEL_SDK_DISABLED", False),
            otlp_endpoint=_url(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
            log_level=log_level,
            shutdown_timeout_s=_float(env, "OTEL_SHUTDOWN_TIMEOUT_S", 5.0, 0.1, 60.0),
            span_export_delay_ms=_int(env, "OTEL_BSP_SCHEDULE_DELAY", 200, 1, 600_000),
            log_export_delay_ms=_int(env, "OTEL_BLRP_SCHEDULE_DELAY", 200, 1, 600_000),
        )


@dataclass(frozen=True)
class ServerSettings:
    """Where a service listens."""

    host: str
    port: int

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str]) -> ServerSettings:
        return cls(
            host=_text(env, "HOST", "127.0.0.1"),
            port=_int(env, "PORT", DEFAULT_PORTS[service_name], 0, 65535),
        )


@dataclass(frozen=True)
class GatewaySettings:
    telemetry: TelemetrySettings
    server: ServerSettings = ServerSettings("127.0.0.1", DEFAULT_PORTS[GATEWAY])
    orders_url: str = "http://127.0.0.1:8001"
    # Above the order service's own payment timeout, so that its answer arrives first.
    orders_timeout_s: float = 3.0
    # Off by default: a client must not steer internal behaviour unless the operator allows it.
    allow_fault_headers: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        return cls(
            telemetry=TelemetrySettings.from_env(GATEWAY, env),
            server=ServerSettings.from_env(GATEWAY, env),
            orders_url=_url(env, "ORDERS_URL", "http://127.0.0.1:8001"),
            orders_timeout_s=_float(env, "ORDERS_TIMEOUT_S", 3.0, 0.05, 120.0),
            allow_fault_headers=_bool(env, "GATEWAY_ALLOW_FAULT_HEADERS", False),
        )


@dataclass(frozen=True)
class OrdersSettings:
    telemetry: TelemetrySettings
    server: ServerSettings = ServerSettings("127.0.0.1", DEFAULT_PORTS[ORDER_SERVICE])
    database_path: Path = Path("data/orders.sqlite3")
    payments_url: str = "http://127.0.0.1:8002"
    payments_timeout_s: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OrdersSettings:
        env = os.environ if env is None else env
        return cls(
            telemetry=TelemetrySettings.from_env(ORDER_SERVICE, env),
            server=ServerSettings.from_env(ORDER_SERVICE, env),
            database_path=Path(_text(env, "ORDERS_DB_PATH", "data/orders.sqlite3")),
            payments_url=_url(env, "PAYMENTS_URL", "http://127.0.0.1:8002"),
            payments_timeout_s=_float(env, "PAYMENTS_TIMEOUT_S", 2.0, 0.05, 120.0),
        )


@dataclass(frozen=True)
class PaymentsSettings:
    telemetry: TelemetrySettings
    server: ServerSettings = ServerSettings("127.0.0.1", DEFAULT_PORTS[PAYMENT_SERVICE])
    # The simulated processor answers after a uniform delay in this range.
    latency_min_ms: int = 20
    latency_max_ms: int = 60
    # Whole-service faults, on top of the per-request ones carried in baggage.
    extra_delay_ms: int = 0
    failure_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_min_ms > self.latency_max_ms:
            raise SettingsError(
                f"PAYMENTS_LATENCY_MIN_MS={self.latency_min_ms} is above PAYMENTS_LATENCY_MAX_MS={self.latency_max_ms}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PaymentsSettings:
        env = os.environ if env is None else env
        return cls(
            telemetry=TelemetrySettings.from_env(PAYMENT_SERVICE, env),
            server=ServerSettings.from_env(PAYMENT_SERVICE, env),
            latency_min_ms=_int(env, "PAYMENTS_LATENCY_MIN_MS", 20, 0, 60_000),
            latency_max_ms=_int(env, "PAYMENTS_LATENCY_MAX_MS", 60, 0, 60_000),
            extra_delay_ms=_int(env, "PAYMENTS_EXTRA_DELAY_MS", 0, 0, 600_000),
            failure_rate=_float(env, "PAYMENTS_FAILURE_RATE", 0.0, 0.0, 1.0),
        )
