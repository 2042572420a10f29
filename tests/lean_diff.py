"""One side of the differential test (tests/test_lean.py): the three services in this process, instrumented by
``TELEMETRY_INSTRUMENTATION`` (lean or contrib), on the same requests; what they emitted, as JSON into a file
(stdout has the services' own JSON lines).

Its own process for each side: contrib's instrumentors keep module globals and replace ``web.Application``.
Usage: python tests/lean_diff.py lean|contrib plain|headers OUTPUT
Every request carries a ``traceparent`` whose trace ID and flag are fixed here, so both sides keep and drop
the same traces; the comparison normalises only IDs, timestamps, durations and ephemeral ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harness.database import sqlite_url
from harness.orders import DECLINED_CARD, DELAY_HEADER, order_body
from harness.processes import free_port
from shop.common.startup import prepare_process
from shop.gateway.app import create_app as create_gateway
from shop.orders.app import create_app as create_orders
from shop.payments.app import create_app as create_payments
from shop.settings import GatewaySettings, OrdersSettings, PaymentsSettings, TelemetrySettings
from shop.telemetry import TelemetryExporters

# Header capture on (the "headers" scenario): request and response headers on both sides of each call,
# one of them sanitized. Unset in "plain", as the shop runs.
SCENARIOS: dict[str, dict[str, str]] = {
    "plain": {},
    "headers": {
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "content-type,x-shop-.*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type,traceresponse",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": "content-type,idempotency-key,baggage",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": "content-.*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "x-shop-secret,idempotency-key",
    },
}
UNKNOWN_ORDER = "0" * 32  # well-formed, and no such order


def traceparent(number: int, sampled: bool) -> dict[str, str]:
    """The same trace ID on both sides for request ``number``; kept (th:0, counted once) or dropped."""
    trace_id, randomness = f"{number + 1:032x}", f"{number * 7919 + 1:014x}"
    if sampled:
        return {"traceparent": f"00-{trace_id}-{number + 1:016x}-01", "tracestate": f"ot=th:0;rv:{randomness}"}
    return {"traceparent": f"00-{trace_id}-{number + 1:016x}-00", "tracestate": f"ot=rv:{randomness},vendor=x"}


async def serve(app: web.Application, runners: list[web.AppRunner], port: int = 0) -> str:
    runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


async def drive(workdir: Path, telemetry: TelemetrySettings) -> list[int]:
    """Every route and status, kept and dropped traces, excluded URLs, a client error and a timeout."""
    runners: list[web.AppRunner] = []
    payments = await serve(create_payments(PaymentsSettings(telemetry, latency_min_ms=1, latency_max_ms=1)), runners)
    orders_settings = OrdersSettings(
        telemetry, database_url=sqlite_url(workdir / "orders.sqlite3"), payments_url=payments, payments_timeout_s=0.3
    )
    orders = await serve(create_orders(orders_settings), runners)
    gateway_settings = GatewaySettings(telemetry, orders_url=orders, allow_fault_headers=True)
    gateway = await serve(create_gateway(gateway_settings), runners)
    closed_port = free_port()
    # A gateway whose order-service is down: its client call fails to connect.
    lost = await serve(
        create_gateway(GatewaySettings(telemetry, orders_url=f"http://127.0.0.1:{closed_port}")), runners
    )
    ports = [int(url.rsplit(":", 1)[1]) for url in (payments, orders, gateway, lost)] + [closed_port]

    async with aiohttp.ClientSession() as user:
        # The user is curl: no client span, no traceparent but the one each request sets.
        AioHttpClientInstrumentor.uninstrument_session(user)
        number = 0

        async def call(method: str, url: str, sampled: bool = True, **options: Any) -> Mapping[str, Any]:
            nonlocal number
            headers = {**traceparent(number, sampled), **options.pop("headers", {})}
            number += 1
            async with user.request(method, url, headers=headers, **options) as response:
                text = await response.text()
                return json.loads(text) if response.content_type == "application/json" else {}

        paid = await call("POST", f"{gateway}/api/order", json=order_body(), headers={"Idempotency-Key": "key-1"})
        await call("POST", f"{gateway}/api/order", sampled=False, json=order_body())
        await call("POST", f"{gateway}/api/order", json=order_body(card_number=DECLINED_CARD))
        await call("POST", f"{gateway}/api/order", json=order_body(quantity=0))
        await call("POST", f"{gateway}/api/order", data=b"{not json", headers={"Content-Type": "application/json"})
        await call("POST", f"{gateway}/api/order", json=order_body(), headers={DELAY_HEADER: "1000"})  # timeout
        await call("GET", f"{gateway}/api/order/{paid['order_id']}")
        await call("GET", f"{gateway}/api/order/{paid['order_id']}", sampled=False)
        await call("GET", f"{gateway}/api/order/{UNKNOWN_ORDER}?sig=secret&page=2")
        await call("GET", f"{gateway}/api/order/not-an-id")
        await call("GET", f"{gateway}/no/such/path", headers={"User-Agent": "lean-diff/1.0"})
        await call("GET", f"{gateway}/no/such/path", sampled=False)
        await call("PUT", f"{gateway}/api/order", json={})
        await call("PURGE", f"{gateway}/api/order")
        await call("GET", f"{gateway}/healthz")
        await call("GET", f"{gateway}/metrics")
        await call("GET", f"{gateway}/api/order/{UNKNOWN_ORDER}", headers={"X-Shop-Secret": "s3", "X-Shop-Tag": "t"})
        await call("GET", f"{lost}/api/order/{UNKNOWN_ORDER}")  # connection refused
    # The timed-out payment ends after its caller gave up; let it finish before collecting.
    await asyncio.sleep(1.2)
    for runner in reversed(runners):
        await runner.cleanup()
    return ports


def attributes(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in (mapping or {}).items()}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context, parent = span.context, span.parent
    assert context is not None
    return {
        "trace": f"{context.trace_id:032x}",
        "span": f"{context.span_id:016x}",
        "parent": f"{parent.span_id:016x}" if parent is not None else None,
        "parent_remote": parent.is_remote if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "scope": [span.instrumentation_scope.name, span.instrumentation_scope.version]
        if span.instrumentation_scope
        else None,
        "attributes": attributes(span.attributes),
        "status": [span.status.status_code.name, span.status.description],
        "events": [{"name": event.name, "attributes": attributes(event.attributes)} for event in span.events],
        "links": len(span.links),
        "trace_state": list(context.trace_state.items()),
        "sampled": context.trace_flags.sampled,
    }


def metric_records(metric: Metric, scope: list[Any]) -> list[dict[str, Any]]:
    records = []
    for point in metric.data.data_points:
        # Durations differ from run to run: a histogram by its count (and attribute set) only.
        value: Any = point.value if isinstance(point, NumberDataPoint) else point.count
        records.append(
            {
                "scope": scope,
                "name": metric.name,
                "unit": metric.unit,
                "description": metric.description,
                "type": type(metric.data).__name__,
                "monotonic": getattr(metric.data, "is_monotonic", None),
                "temporality": getattr(getattr(metric.data, "aggregation_temporality", None), "name", None),
                "attributes": attributes(point.attributes),
                "value": value,
            }
        )
    return records


def main() -> int:
    mode, scenario, output = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    os.environ.update(SCENARIOS[scenario])
    spans, reader, logs = InMemorySpanExporter(), InMemoryMetricReader(), InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    exporters = TelemetryExporters(span_exporter=spans, metric_reader=reader, log_exporter=logs, batch=False)
    telemetry = TelemetrySettings(service_name="lean-diff", instrumentation=mode, log_level="INFO")
    prepare_process(telemetry, exporters)
    with tempfile.TemporaryDirectory(prefix="lean-diff-") as tmp:
        ports = asyncio.run(drive(Path(tmp), telemetry))
    data = reader.get_metrics_data()
    metrics = [
        record
        for resource_metrics in (data.resource_metrics if data else [])
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for record in metric_records(
            metric, [scope_metrics.scope.name, scope_metrics.scope.version, scope_metrics.scope.schema_url]
        )
    ]
    log_records = [
        {
            "body": str(record.log_record.body),
            "severity": record.log_record.severity_text,
            "attributes": attributes(record.log_record.attributes),
            "trace": f"{record.log_record.trace_id:032x}" if record.log_record.trace_id else None,
            "span": f"{record.log_record.span_id:016x}" if record.log_record.span_id else None,
            "scope": record.instrumentation_scope.name if record.instrumentation_scope else None,
        }
        for record in logs.get_finished_logs()
    ]
    output.write_text(
        json.dumps(
            {
                "ports": ports,
                "spans": [span_record(span) for span in spans.get_finished_spans()],
                "metrics": metrics,
                "logs": log_records,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
