"""Every setting of the three services, read from the environment in one place.

Each service gets a frozen dataclass. A field read from the environment names its variable, its
parser and its default once, in its declaration; ``from_env()`` starts from the defaults and
replaces what the environment sets. Tests build the dataclasses directly with explicit values
and never touch ``os.environ``.

The ``OTEL_*`` variables the OpenTelemetry SDK reads itself (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``, ...) are not read here: see ``shop.telemetry``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

GATEWAY = "gateway"
ORDER_SERVICE = "order-service"
PAYMENT_SERVICE = "payment-service"

DEFAULT_PORTS = {GATEWAY: 8000, ORDER_SERVICE: 8001, PAYMENT_SERVICE: 8002}
# apps/web beside the shop package (/app/web in the image).
WEB_ROOT = Path(__file__).resolve().parents[1] / "web"

T = TypeVar("T")
NumberT = TypeVar("NumberT", int, float)
SettingsT = TypeVar("SettingsT", bound="DataclassInstance")

# Turns a variable's (stripped, non-empty) text into a value, or raises SettingsError.
Parse = Callable[[str, str], T]


class SettingsError(ValueError):
    """A variable in the environment has a value the services cannot use."""


def reads(name: str, parse: Parse[Any]) -> dict[str, Any]:
    """Field metadata: ``read_env`` sets this field from the variable ``name`` when it is set and not blank."""
    return {"variable": name, "parse": parse}


def variable(name: str, parse: Parse[T], default: T) -> T:
    """A field read from the environment variable ``name``, with its one default."""
    return field(default=default, metadata=reads(name, parse))


def read_env(settings: SettingsT, env: Mapping[str, str]) -> SettingsT:
    """``settings`` with each field whose variable ``env`` sets replaced; nested settings likewise."""
    changes: dict[str, Any] = {}
    for settings_field in fields(settings):
        if "variable" in settings_field.metadata:
            name = settings_field.metadata["variable"]
            raw = env.get(name, "").strip()
            if raw:
                changes[settings_field.name] = settings_field.metadata["parse"](name, raw)
        else:
            current = getattr(settings, settings_field.name)
            if is_dataclass(current) and not isinstance(current, type):
                changes[settings_field.name] = read_env(current, env)
    return replace(settings, **changes)


def text(name: str, raw: str) -> str:
    return raw


def _in_range(parse: Callable[[str], NumberT], low: NumberT, high: NumberT) -> Parse[NumberT]:
    noun = "a whole number" if parse is int else "a number"

    def parse_in_range(name: str, raw: str) -> NumberT:
        try:
            value = parse(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not {noun}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={value} is outside {low}..{high}")
        return value

    return parse_in_range


def whole(low: int, high: int) -> Parse[int]:
    return _in_range(int, low, high)


def number(low: float, high: float) -> Parse[float]:
    return _in_range(float, low, high)


def boolean(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean (use true or false)")


def url(name: str, raw: str) -> str:
    value = raw.rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name}={value!r} must start with http:// or https://")
    return value


def one_of(*choices: str) -> Parse[str]:
    def parse_choice(name: str, raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    return parse_choice


def ratio(name: str, raw: str) -> float:
    """A probability above 0 and at most 1."""
    value = _in_range(float, 0.0, 1.0)(name, raw)
    if value == 0:
        raise SettingsError(f"{name}=0 would keep no trace at all; the ratio must be above 0 and at most 1")
    return value


SQLITE_URL_PREFIX = "sqlite:///"
POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://")


def database_url(name: str, raw: str) -> str:
    """``sqlite:///PATH`` (relative; four slashes for an absolute path) or ``postgresql://USER:PASSWORD@HOST:PORT/DB``."""
    if raw.startswith(SQLITE_URL_PREFIX) and len(raw) > len(SQLITE_URL_PREFIX):
        return raw
    if raw.startswith(POSTGRES_URL_PREFIXES):
        parsed = urlsplit(raw)
        try:
            parsed.port  # noqa: B018  # raises on a port that is not a number
        except ValueError:
            raise SettingsError(f"{name}: the port is not a number") from None
        if parsed.hostname and parsed.path.strip("/"):
            return raw
        # Never echo the URL: it may hold a password.
        raise SettingsError(
            f"{name}: a PostgreSQL URL needs a host and a database name (postgresql://USER:PASSWORD@HOST:PORT/DB)"
        )
    raise SettingsError(f"{name} must start with sqlite:/// (a file) or postgresql:// (a server)")


def ip_address(name: str, raw: str) -> str:
    """An IPv4 or IPv6 address, as compose needs for a published port's host address."""
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None
    return raw


def is_loopback(address: str) -> bool:
    """True only for an address nothing but this machine can reach; 0.0.0.0, a LAN address or an unknown
    host name is reachable from elsewhere (a name is not resolved: unknown counts as exposed)."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def log_level(name: str, raw: str) -> str:
    value = raw.upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"{name}={value!r} must be DEBUG, INFO, WARNING or ERROR")
    return value


@dataclass(frozen=True)
class TelemetrySettings:
    """What ``configure_telemetry`` needs; the SDK and the OTLP exporters also read their own OTEL_* variables."""

    # This service's resource attributes where OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    # do not set them (the SDK parses those two; see shop.telemetry.build_resource).
    service_name: str
    service_version: str = variable("SERVICE_VERSION", text, "0.1.0")
    service_namespace: str = "shop"
    deployment_environment: str = "local"
    sdk_disabled: bool = variable("OTEL_SDK_DISABLED", boolean, False)
    # Who instruments the service: "lean" (shop.lean: contrib's output at a fraction of its per-request
    # cost), "contrib" (the contrib instrumentors as they are: the way back), or "zero-code" (nothing here:
    # `opentelemetry-instrument` sets up the SDK and the instrumentations; the JSON stdout lines stay).
    instrumentation: str = variable("TELEMETRY_INSTRUMENTATION", one_of("lean", "contrib", "zero-code"), "lean")
    otlp_endpoint: str = variable("OTEL_EXPORTER_OTLP_ENDPOINT", url, "http://localhost:4318")
    log_level: str = variable("LOG_LEVEL", log_level, "INFO")
    # How long shutdown may spend flushing buffered telemetry before giving up.
    shutdown_timeout_s: float = variable("OTEL_SHUTDOWN_TIMEOUT_S", number(0.1, 60.0), 5.0)
    # Head sampling (shop.sampling): the probability that a trace is kept. 1.0 keeps every trace, as
    # the demo promises; .env says what a production value such as 0.1 trades.
    sample_ratio: float = variable("TRACES_SAMPLE_RATIO", ratio, 1.0)
    # True for the service that decides for the traces entering the shop (the gateway); the others
    # follow their caller's decision.
    decides_sampling: bool = False
    # Where this service decides: keep a trace whose inbound traceparent says "sampled" (counted
    # exactly once). Off by default: a caller must not steer sampling unless the operator allows it.
    allow_forced_sampling: bool = variable("GATEWAY_ALLOW_FORCED_SAMPLING", boolean, False)


@dataclass(frozen=True)
class ServerSettings:
    """Where a service listens; each service has its own default port (DEFAULT_PORTS)."""

    port: int = field(metadata=reads("PORT", whole(0, 65535)))
    host: str = variable("HOST", text, "127.0.0.1")
    # Several processes of one service on one port (SO_REUSEPORT): the kernel spreads new connections
    # over them, as a Kubernetes Service does over pods. Off by default: a second copy is then an error.
    reuse_port: bool = variable("REUSE_PORT", boolean, False)


@dataclass(frozen=True)
class GatewaySettings:
    telemetry: TelemetrySettings = TelemetrySettings(GATEWAY, decides_sampling=True)
    server: ServerSettings = ServerSettings(DEFAULT_PORTS[GATEWAY])
    orders_url: str = variable("ORDERS_URL", url, f"http://127.0.0.1:{DEFAULT_PORTS[ORDER_SERVICE]}")
    # Above the order service's own payment timeout, so that its answer arrives first.
    orders_timeout_s: float = variable("ORDERS_TIMEOUT_S", number(0.05, 120.0), 3.0)
    # A new connection for each call to order-service, so that what balances connections (compose's DNS,
    # which aiohttp rotates over per connection; a Kubernetes Service) spreads orders over its replicas.
    # Off by default: one replica is best served over kept-alive connections.
    orders_spread_over_replicas: bool = variable("ORDERS_SPREAD_OVER_REPLICAS", boolean, False)
    # Off by default: a client must not steer internal behaviour unless the operator allows it.
    allow_fault_headers: bool = variable("GATEWAY_ALLOW_FAULT_HEADERS", boolean, False)
    # Where other machines reach the gateway: compose passes the address it publishes the port on
    # (the gateway itself listens on 0.0.0.0 in its container). Unset, it is where the gateway listens.
    public_address: str | None = variable("PUBLIC_BIND_ADDRESS", ip_address, None)
    # The second switch: fault headers even where the gateway is reachable beyond loopback.
    allow_fault_headers_off_loopback: bool = variable("GATEWAY_ALLOW_FAULT_HEADERS_OFF_LOOPBACK", boolean, False)
    # The shop page (GET /, docs/browser.md) links each kept trace to Grafana at this address, as the
    # person's browser reaches it: the gateway cannot know it.
    grafana_public_url: str = variable("GRAFANA_PUBLIC_URL", url, "http://localhost:3000")
    # The Collector's receiver of browser spans (otlp/browser in otel-collector/config.yaml), to which the
    # gateway forwards the page's POST /otlp/v1/traces.
    browser_otlp_endpoint: str = variable("BROWSER_OTLP_ENDPOINT", url, "http://localhost:4319")
    # Public ingest, bounded: the largest body, and the requests per minute from one client address.
    browser_traces_max_bytes: int = variable("BROWSER_TRACES_MAX_BYTES", whole(1024, 4 * 1024 * 1024), 256 * 1024)
    browser_traces_per_minute: int = variable("BROWSER_TRACES_PER_MINUTE", whole(1, 100_000), 120)
    # The page, its script and the built tracing bundle (apps/web; `make web` builds dist/).
    web_root: Path = WEB_ROOT

    @property
    def reachable_beyond_loopback(self) -> bool:
        return not is_loopback(self.public_address or self.server.host)

    @property
    def honours_fault_headers(self) -> bool:
        """Fault headers hold requests open for up to a minute each: off wherever others can reach the
        gateway, whatever GATEWAY_ALLOW_FAULT_HEADERS says, unless the second switch is set too."""
        return self.allow_fault_headers and (
            self.allow_fault_headers_off_loopback or not self.reachable_beyond_loopback
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        return read_env(cls(), os.environ if env is None else env)


@dataclass(frozen=True)
class OrdersSettings:
    telemetry: TelemetrySettings = TelemetrySettings(ORDER_SERVICE)
    server: ServerSettings = ServerSettings(DEFAULT_PORTS[ORDER_SERVICE])
    # The engine is in the URL: SQLite embedded (one replica), or a PostgreSQL server (any number).
    database_url: str = variable("ORDERS_DATABASE_URL", database_url, "sqlite:///data/orders.sqlite3")
    # PostgreSQL's connections per process, and how long an order waits for one before a 503.
    db_pool_size: int = variable("ORDERS_DB_POOL_SIZE", whole(1, 100), 10)
    db_acquire_timeout_s: float = variable("ORDERS_DB_ACQUIRE_TIMEOUT_S", number(0.01, 30.0), 1.0)
    # A statement running longer is abandoned with a 503; above the slow-database fault's 2 s at most.
    db_statement_timeout_s: float = variable("ORDERS_DB_STATEMENT_TIMEOUT_S", number(0.1, 60.0), 5.0)
    payments_url: str = variable("PAYMENTS_URL", url, f"http://127.0.0.1:{DEFAULT_PORTS[PAYMENT_SERVICE]}")
    payments_timeout_s: float = variable("PAYMENTS_TIMEOUT_S", number(0.05, 120.0), 2.0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OrdersSettings:
        return read_env(cls(), os.environ if env is None else env)


@dataclass(frozen=True)
class PaymentsSettings:
    telemetry: TelemetrySettings = TelemetrySettings(PAYMENT_SERVICE)
    server: ServerSettings = ServerSettings(DEFAULT_PORTS[PAYMENT_SERVICE])
    # The simulated processor answers after a uniform delay in this range.
    latency_min_ms: int = variable("PAYMENTS_LATENCY_MIN_MS", whole(0, 60_000), 20)
    latency_max_ms: int = variable("PAYMENTS_LATENCY_MAX_MS", whole(0, 60_000), 60)
    # Whole-service faults, on top of the per-request ones carried in baggage.
    extra_delay_ms: int = variable("PAYMENTS_EXTRA_DELAY_MS", whole(0, 600_000), 0)
    failure_rate: float = variable("PAYMENTS_FAILURE_RATE", number(0.0, 1.0), 0.0)

    def __post_init__(self) -> None:
        if self.latency_min_ms > self.latency_max_ms:
            raise SettingsError(
                f"PAYMENTS_LATENCY_MIN_MS={self.latency_min_ms} is above PAYMENTS_LATENCY_MAX_MS={self.latency_max_ms}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PaymentsSettings:
        return read_env(cls(), os.environ if env is None else env)
