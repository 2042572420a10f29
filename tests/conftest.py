"""Shared fixtures: in-memory telemetry for the whole session, the three services on real sockets, and the tiers.

The OpenTelemetry providers are process-wide and can be set once, so every in-process
test shares one configuration whose exporters keep everything in memory; each test
starts from empty exporters and a metric reader that has forgotten earlier tests.
"""

from __future__ import annotations

import os
import re
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, Metric, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harness.backends import PROMETHEUS_RELEASE, find_prometheus
from harness.database import sqlite_url
from harness.orders import order_body
from harness.postgres import PostgresServer
from harness.processes import free_port
from shop.common.startup import prepare_process
from shop.gateway.app import create_app as create_gateway
from shop.orders.app import create_app as create_orders
from shop.payments.app import create_app as create_payments
from shop.settings import GatewaySettings, OrdersSettings, PaymentsSettings, TelemetrySettings
from shop.telemetry import TelemetryExporters
from tools import postgres_bin

TEST_TELEMETRY = TelemetrySettings(service_name="shop-tests")
# Every test carries exactly one tier (a module's ``pytestmark``); ``make test-fast`` runs the first two.
TIERS = {
    "unit": "no services: functions, files, and short-lived tools such as the Collector's own CLI",
    "inprocess": "the three services in the test's own process on loopback sockets, telemetry in memory",
    "processes": "real processes: the services (python -m shop.<service>), a user script, Locust, PostgreSQL",
    "backends": "the services as processes with the built Collector and Prometheus",
}
# Counters and histograms report what happened since the last collection, so a test sees its own
# measurements only (UpDownCounters stay cumulative: a delta of "in flight" means nothing).
DELTA: dict[type, AggregationTemporality] = dict.fromkeys(
    (Counter, Histogram, ObservableCounter), AggregationTemporality.DELTA
)


def pytest_configure(config: pytest.Config) -> None:
    for name, description in TIERS.items():
        config.addinivalue_line("markers", f"{name}: tier: {description}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which Prometheus the tests ran, when one did: the release compose runs, or a fallback."""
    if find_prometheus.cache_info().currsize:  # only tests that need Prometheus look for it
        found = find_prometheus()
        if found is not None:
            fallback = "" if found.built else f" (a fallback: compose runs {PROMETHEUS_RELEASE})"
            terminalreporter.write_line(f"Tests ran {found}{fallback}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a test without exactly one tier, so that a new one cannot slip out of ``make test-fast``."""
    untiered = [item.nodeid for item in items if len({m.name for m in item.iter_markers() if m.name in TIERS}) != 1]
    if untiered:
        raise pytest.UsageError(
            f"tests need exactly one tier marker ({', '.join(TIERS)}), e.g. pytestmark = pytest.mark.unit: "
            + ", ".join(untiered)
        )


@dataclass
class Capture:
    """What the services emitted, kept in memory."""

    span_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    log_exporter: InMemoryLogRecordExporter
    # What the metric reader returned since clear(): each collection holds only what was new.
    collected: list[MetricsData] = field(default_factory=list)

    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    def spans_of_trace(self, trace_id: str) -> list[ReadableSpan]:
        wanted = int(trace_id, 16)
        return [s for s in self.spans() if s.context is not None and s.context.trace_id == wanted]

    def charges(self, order_id: str) -> int:
        """Cards actually charged for an order: processor spans that decided and were not replays."""
        return sum(
            1
            for s in self.spans()
            if s.name == "processor.authorize"
            and s.attributes is not None
            and s.attributes.get("order.id") == order_id
            and s.attributes.get("payment.outcome") in ("authorized", "declined")
            and s.attributes.get("payment.duplicate") is False
        )

    def logs(self) -> list[ReadableLogRecord]:
        return list(self.log_exporter.get_finished_logs())

    def metrics_data(self) -> list[MetricsData]:
        """Every collection since clear(), one taken now."""
        data = self.metric_reader.get_metrics_data()
        if data is not None:
            self.collected.append(data)
        return list(self.collected)

    def metrics(self) -> dict[str, list[Metric]]:
        """Each metric measured since clear(), by name: one entry per collection that saw it."""
        found: dict[str, list[Metric]] = defaultdict(list)
        for data in self.metrics_data():
            for resource_metrics in data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        found[metric.name].append(metric)
        return dict(found)

    def clear(self) -> None:
        self.span_exporter.clear()
        self.log_exporter.clear()
        self.metric_reader.get_metrics_data()  # with DELTA temporality, collecting forgets earlier tests
        self.collected.clear()


@pytest.fixture(scope="session")
def telemetry_capture() -> Iterator[Capture]:
    capture = Capture(
        InMemorySpanExporter(),
        InMemoryMetricReader(preferred_temporality=DELTA),
        InMemoryLogRecordExporter(),  # type: ignore[no-untyped-call]  # untyped upstream
    )
    exporters = TelemetryExporters(
        span_exporter=capture.span_exporter,
        metric_reader=capture.metric_reader,
        log_exporter=capture.log_exporter,
        batch=False,
    )
    telemetry = prepare_process(TEST_TELEMETRY, exporters)  # the start-up step production runs
    yield capture
    telemetry.shutdown()


@pytest.fixture(autouse=True)
def capture(telemetry_capture: Capture) -> Capture:
    telemetry_capture.clear()
    return telemetry_capture


@pytest.fixture(autouse=True)
def isolated_environment() -> Iterator[None]:
    """Nothing a test does to os.environ leaks into the next one."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (harness/postgres.py; its logs in a pytest tmp dir)."""
    with PostgresServer.start(tmp_path_factory.mktemp("postgres"), bin_dir=postgres_bin()) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a new, empty database for this test alone, dropped after it (with any session left on it)."""
    name = f"{re.sub(r'[^a-z0-9_]+', '_', request.node.name.lower())[:50]}_{secrets.token_hex(4)}"
    url = postgres_server.create_database(name)
    yield url
    if postgres_server.is_running:
        postgres_server.drop_database(name)


@dataclass
class Served:
    """An app listening on loopback as ``web.run_app`` would serve it."""

    app: web.Application
    url: str


ServeFn = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Serve apps like production does: unlike aiohttp's TestServer, a caller that hangs up
    does not cancel the handler (handler_cancellation=False is run_app's default)."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, port: int = 0) -> Served:
        runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        _, bound_port = runner.addresses[0][:2]
        return Served(app, f"http://127.0.0.1:{bound_port}")

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@dataclass
class Stack:
    """The three services on real loopback ports, the gateway behind a test client."""

    gateway: TestClient[web.Request, web.Application]
    orders: Served | None
    payments: Served | None
    orders_settings: OrdersSettings
    payments_settings: PaymentsSettings

    async def place_order(self, body: dict[str, Any] | None = None, **headers: str) -> tuple[int, dict[str, Any]]:
        response = await self.gateway.post("/api/order", json=body or order_body(), headers=headers)
        return response.status, await response.json()


StackFactory = Callable[..., Awaitable[Stack]]


ENGINES = ("sqlite", "postgresql")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """order-service's engine: every test that starts the stack runs once on each, with one body."""
    return str(request.param)


@pytest.fixture
def database_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database on ``engine`` for this test."""
    if engine == "sqlite":
        return sqlite_url(tmp_path / "orders.sqlite3")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def start_stack(serve: ServeFn, aiohttp_client: Any, database_url: str) -> StackFactory:
    """Start payments, orders and gateway, each pointed at the next one's real URL; order-service on this
    test's database unless ``database_url`` names another.

    ``payments_port`` puts payment-service on a chosen port; ``payments_running=False``
    leaves that port closed so payment-service is down.
    """

    async def start(
        *,
        payments: dict[str, Any] | None = None,
        orders: dict[str, Any] | None = None,
        gateway: dict[str, Any] | None = None,
        payments_running: bool = True,
        payments_port: int | None = None,
        orders_running: bool = True,
        database_url: str = database_url,
    ) -> Stack:
        # Fast by default: tests that need a slow processor say so.
        payments_settings = PaymentsSettings(
            telemetry=TEST_TELEMETRY, **{"latency_min_ms": 1, "latency_max_ms": 5, **(payments or {})}
        )
        payments_server = None
        payments_url = f"http://127.0.0.1:{payments_port or free_port()}"
        if payments_running:
            payments_server = await serve(create_payments(payments_settings), port=payments_port or 0)
            payments_url = payments_server.url

        orders_settings = OrdersSettings(
            telemetry=TEST_TELEMETRY,
            database_url=database_url,
            payments_url=payments_url,
            **(orders or {}),
        )
        orders_server = None
        orders_url = f"http://127.0.0.1:{free_port()}"
        if orders_running:
            orders_server = await serve(create_orders(orders_settings))
            orders_url = orders_server.url

        gateway_settings = GatewaySettings(telemetry=TEST_TELEMETRY, orders_url=orders_url, **(gateway or {}))
        client = await aiohttp_client(create_gateway(gateway_settings))
        # The test client stands in for curl: it must not add a client span or a traceparent of its own.
        AioHttpClientInstrumentor.uninstrument_session(client.session)
        return Stack(client, orders_server, payments_server, orders_settings, payments_settings)

    return start


@pytest.fixture
async def stack(start_stack: StackFactory) -> Stack:
    return await start_stack()
