"""One order is one trace across the three services, with the right names, kinds, parents and attributes."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Capture, Stack, StackFactory
from harness.orders import DECLINED_CARD, order_body

pytestmark = pytest.mark.inprocess


def by_name(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def only_child(spans: list[ReadableSpan], parent: ReadableSpan, name: str, kind: SpanKind) -> ReadableSpan:
    [child] = [s for s in children(spans, parent) if s.name == name]
    assert child.kind == kind
    return child


async def test_an_order_is_one_trace_through_all_three_services(stack: Stack, capture: Capture) -> None:
    status, body = await stack.place_order()
    assert status == 201
    spans = capture.spans_of_trace(body["trace_id"])
    assert len(spans) == len(capture.spans()) == 9, "every span of the request belongs to the returned trace"

    gateway_server = by_name(spans, "POST /api/order")
    assert gateway_server.kind == SpanKind.SERVER
    assert gateway_server.parent is None
    gateway_client = only_child(spans, gateway_server, "POST", SpanKind.CLIENT)
    orders_server = only_child(spans, gateway_client, "POST /orders", SpanKind.SERVER)
    place_order = only_child(spans, orders_server, "place_order", SpanKind.INTERNAL)
    insert = only_child(spans, place_order, "INSERT orders", SpanKind.CLIENT)
    orders_client = only_child(spans, place_order, "POST", SpanKind.CLIENT)
    update = only_child(spans, place_order, "UPDATE orders", SpanKind.CLIENT)
    payments_server = only_child(spans, orders_client, "POST /payments", SpanKind.SERVER)
    processor = only_child(spans, payments_server, "processor.authorize", SpanKind.INTERNAL)

    assert gateway_server.attributes is not None
    assert gateway_server.attributes[HTTP_ROUTE] == "/api/order"
    assert gateway_server.attributes[HTTP_RESPONSE_STATUS_CODE] == 201
    assert place_order.attributes is not None
    assert place_order.attributes["order.id"] == body["order_id"]
    assert place_order.attributes["order.status"] == "paid"
    assert place_order.attributes["order.quantity"] == 2
    assert place_order.attributes["order.total"] == 25.0
    assert processor.attributes is not None
    assert processor.attributes["payment.outcome"] == "authorized"
    assert processor.attributes["payment.amount"] == 25.0
    assert insert.end_time is not None
    assert orders_client.start_time is not None
    assert update.start_time is not None
    assert orders_client.end_time is not None
    assert insert.end_time <= orders_client.start_time, "stored before it is charged"
    assert orders_client.end_time <= update.start_time, "the outcome is recorded after the charge"
    for span in spans:
        assert span.status.status_code != StatusCode.ERROR, span.name


async def test_database_spans_follow_the_semantic_conventions(stack: Stack, capture: Capture, engine: str) -> None:
    await stack.place_order()
    [insert] = [s for s in capture.spans() if s.name == "INSERT orders"]
    assert insert.attributes is not None
    assert insert.attributes[DB_SYSTEM_NAME] == engine
    assert insert.attributes[DB_OPERATION_NAME] == "INSERT"
    assert insert.attributes[DB_COLLECTION_NAME] == "orders"
    query = insert.attributes[DB_QUERY_TEXT]
    assert isinstance(query, str)
    assert query.startswith("INSERT INTO orders")
    assert "customer-1" not in query, "the query text is parameterised"


async def test_server_spans_are_named_by_route_template(stack: Stack, capture: Capture) -> None:
    _, placed = await stack.place_order()
    capture.clear()
    response = await stack.gateway.get(f"/api/order/{placed['order_id']}")
    assert response.status == 200

    names = {s.name for s in capture.spans() if s.kind == SpanKind.SERVER}
    assert names == {"GET /api/order/{order_id}", "GET /orders/{order_id}"}
    gateway_server = by_name(capture.spans(), "GET /api/order/{order_id}")
    assert gateway_server.attributes is not None
    assert gateway_server.attributes[HTTP_ROUTE] == "/api/order/{order_id}"


async def test_probes_and_scrapes_are_not_traced(stack: Stack, capture: Capture) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await stack.gateway.get(path)).status == 200
    traced = {s.name for s in capture.spans() if s.kind == SpanKind.SERVER}
    assert traced == set()


async def test_a_failed_payment_marks_spans_as_errors_with_the_exception(
    start_stack: StackFactory, capture: Capture
) -> None:
    stack = await start_stack(payments={"failure_rate": 1.0})
    status, body = await stack.place_order()
    assert status == 502
    spans = capture.spans_of_trace(body["trace_id"])

    processor = by_name(spans, "processor.authorize")
    assert processor.status.status_code == StatusCode.ERROR
    assert [e.name for e in processor.events] == ["exception"]
    assert by_name(spans, "POST /payments").status.status_code == StatusCode.ERROR
    place_order = by_name(spans, "place_order")
    assert place_order.status.status_code == StatusCode.ERROR
    assert place_order.attributes is not None
    assert place_order.attributes["order.status"] == "payment_failed"
    assert by_name(spans, "POST /api/order").status.status_code == StatusCode.ERROR


async def test_a_declined_card_is_a_business_outcome_not_an_error(stack: Stack, capture: Capture) -> None:
    status, body = await stack.place_order(order_body(card_number=DECLINED_CARD))
    assert status == 402
    spans = capture.spans_of_trace(body["trace_id"])
    processor = by_name(spans, "processor.authorize")
    assert processor.attributes is not None
    assert processor.attributes["payment.outcome"] == "declined"
    # HTTP semantic conventions: a 4xx is an error on the client span only.
    for span in spans:
        failed = span.status.status_code == StatusCode.ERROR
        assert failed == (span.kind == SpanKind.CLIENT and span.name == "POST"), span.name


async def test_an_inbound_traceparent_continues_the_callers_trace(stack: Stack, capture: Capture) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, body = await stack.place_order(order_body(), traceparent=f"00-{caller_trace}-00f067aa0ba902b7-01")
    assert status == 201
    assert body["trace_id"] == caller_trace
    gateway_server = by_name(capture.spans(), "POST /api/order")
    assert gateway_server.parent is not None
    assert gateway_server.parent.span_id == 0x00F067AA0BA902B7


async def test_error_answers_name_their_trace_in_traceresponse_too(stack: Stack) -> None:
    for response in (
        await stack.gateway.get("/no/such/path"),
        await stack.gateway.post("/api/order", json=["not", "an", "object"]),
    ):
        assert response.status in (404, 422)
        version, trace_id, _, _ = response.headers["traceresponse"].split("-")
        assert (version, trace_id) == ("00", (await response.json())["trace_id"])
        # A browser script may read it (and the trace's tracestate, which the shop page follows) across origins.
        assert response.headers["Access-Control-Expose-Headers"] == "traceresponse, tracestate"
