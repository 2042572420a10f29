"""Log records carry the trace and span of the request that wrote them, on stdout and over OTLP."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id

from conftest import Capture, Stack, StackFactory
from shop.telemetry import json_log_formatter

pytestmark = pytest.mark.inprocess


async def test_records_written_during_a_request_carry_its_trace_and_span(stack: Stack, capture: Capture) -> None:
    status, body = await stack.place_order()
    assert status == 201
    span_ids = {s.context.span_id for s in capture.spans_of_trace(body["trace_id"]) if s.context is not None}

    records = [r for r in capture.logs() if r.log_record.attributes is not None]
    loggers = {r.instrumentation_scope.name for r in records if r.instrumentation_scope is not None}
    assert {"shop.gateway.handlers", "shop.orders.handlers", "shop.payments.handlers"} <= loggers
    for record in records:
        log_record = record.log_record
        assert format_trace_id(log_record.trace_id or 0) == body["trace_id"], log_record.body
        assert log_record.span_id in span_ids, log_record.body

    # One line per service per paid order: the spans hold the steps in between.
    messages = sorted(str(r.log_record.body) for r in records)
    assert messages == ["order answered", "order paid", "payment authorized"]
    answered = next(r.log_record for r in records if r.log_record.body == "order answered")
    assert answered.attributes is not None
    assert answered.attributes["http.response.status_code"] == 201
    assert answered.attributes["order.item"] == "book"


async def test_only_our_own_loggers_are_exported(stack: Stack, capture: Capture) -> None:
    await stack.place_order()
    scopes = {r.instrumentation_scope.name for r in capture.logs() if r.instrumentation_scope is not None}
    assert scopes
    assert all(scope.startswith("shop.") for scope in scopes), scopes


async def test_every_error_answer_is_logged_with_its_code(stack: Stack, capture: Capture) -> None:
    for method, path, data in [
        ("POST", "/api/order", b"not json"),
        ("GET", "/nowhere", None),
        ("PUT", "/api/order", None),
    ]:
        await stack.gateway.request(method, path, data=data)
    records = [r.log_record for r in capture.logs()]
    assert [(r.body, r.severity_text) for r in records] == [
        ("request failed: malformed_json", "WARN"),
        ("request failed: not_found", "WARN"),
        ("request failed: method_not_allowed", "WARN"),
    ]
    assert [r.attributes["http.response.status_code"] for r in records if r.attributes] == [400, 404, 405]


async def test_server_errors_are_logged_as_errors(start_stack: StackFactory, capture: Capture) -> None:
    stack = await start_stack(orders_running=False)
    status, _ = await stack.place_order()
    assert status == 503
    failures = [r.log_record for r in capture.logs() if r.log_record.severity_text == "ERROR"]
    assert [r.body for r in failures] == ["request failed: order_service_unavailable"]


def test_stdout_lines_are_json_with_service_and_trace_context() -> None:
    formatter = json_log_formatter("payment-service")
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span("work") as span:
        record = logging.LogRecord("shop.test", logging.INFO, __file__, 1, "charged %s", ("card",), None)
        record.__dict__["order.id"] = "abc"
        line = json.loads(formatter.format(record))
    context = span.get_span_context()

    assert line["message"] == "charged card"
    assert line["level"] == "INFO"
    assert line["logger"] == "shop.test"
    assert line["service.name"] == "payment-service"
    assert line["order.id"] == "abc"
    assert line["trace_id"] == format_trace_id(context.trace_id)
    assert line["span_id"] == format_span_id(context.span_id)
    assert "timestamp" in line


def test_stdout_lines_outside_a_span_have_no_trace_fields() -> None:
    record = logging.LogRecord("shop.test", logging.INFO, __file__, 1, "starting", (), None)
    line = json.loads(json_log_formatter("gateway").format(record))
    assert "trace_id" not in line
    assert "span_id" not in line
