"""Metrics over OTLP (SDK) and on /metrics (prometheus-client): present, labelled, with exemplars, never twice."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from opentelemetry.sdk.metrics.export import Histogram, NumberDataPoint, Sum
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from prometheus_client.parser import text_string_to_metric_families

from conftest import Capture, Stack
from harness.orders import DECLINED_CARD, order_body
from shop.common.ops import REGISTRY

pytestmark = pytest.mark.inprocess

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


def counted(capture: Capture, name: str, attribute: str) -> Counter[object]:
    """This test's measurements of one metric, by the value of one attribute: a counter's sum or a histogram's
    count (the reader is DELTA and reset per test, so earlier tests' measurements are not included)."""
    totals: Counter[object] = Counter()
    for metric in capture.metrics().get(name, []):
        assert isinstance(metric.data, Sum | Histogram)
        for point in metric.data.data_points:
            value = (point.attributes or {}).get(attribute)
            totals[value] += int(point.value) if isinstance(point, NumberDataPoint) else point.count
    return totals


async def test_sdk_exports_http_and_business_metrics(stack: Stack, capture: Capture) -> None:
    await stack.place_order()
    await stack.place_order(order_body(card_number=DECLINED_CARD))

    server = counted(capture, "http.server.request.duration", HTTP_ROUTE)
    assert (server["/api/order"], server["/orders"], server["/payments"]) == (2, 2, 2)
    assert sum(counted(capture, "http.client.request.duration", HTTP_ROUTE).values()) == 4  # two hops per order
    assert counted(capture, "orders.placed", "order.status") == {"paid": 1, "payment_declined": 1}
    assert counted(capture, "orders.value", "order.status") == {"paid": 1, "payment_declined": 1}
    assert counted(capture, "payments.authorizations", "payment.outcome") == {"authorized": 1, "declined": 1}


async def test_every_peer_called_is_named_by_the_address_the_client_metric_records(
    stack: Stack, capture: Capture
) -> None:
    """The service map joins each HTTP client series to shop.peer.info on address and port
    (prometheus/rules/service-graph.yml): both must describe the peer the same way."""
    await stack.place_order()
    metrics = capture.metrics()
    called = {
        (point.attributes["server.address"], point.attributes["server.port"])
        for metric in metrics["http.client.request.duration"]
        for point in metric.data.data_points
        if point.attributes
    }
    named = {
        (point.attributes["server.address"], point.attributes["server.port"]): point.attributes["peer.service"]
        for metric in metrics["shop.peer.info"]
        for point in metric.data.data_points
        if point.attributes
    }
    assert len(called) == 2, called
    assert {named.get(peer) for peer in called} == {"order-service", "payment-service"}


async def test_prometheus_endpoint_has_runtime_and_business_counters_with_exemplars(stack: Stack) -> None:
    await stack.place_order(order_body(), **{"Idempotency-Key": "exemplar"})
    status, replay = await stack.place_order(order_body(), **{"Idempotency-Key": "exemplar"})
    assert status == 201
    assert stack.orders is not None

    async with stack.gateway.session.get(f"{stack.orders.url}/metrics", headers=OPENMETRICS) as response:
        assert response.content_type == "application/openmetrics-text"
        text = await response.text()
    assert "process_cpu_seconds_total" in text
    assert "python_info" in text
    exemplar = re.search(r'^orders_idempotent_replays_total 1\.0 # \{trace_id="([0-9a-f]{32})"\} 1\.0', text, re.M)
    assert exemplar is not None, text
    assert exemplar.group(1) == replay["trace_id"]

    plain = await (await stack.gateway.get("/metrics")).text()
    assert "# {" not in plain, "the classic text format carries no exemplars"


async def test_no_metric_is_exported_under_two_names(stack: Stack, capture: Capture) -> None:
    await stack.place_order()
    await stack.gateway.post("/api/order", json={"quantity": 0})
    otel_names = {name.replace(".", "_") for name in capture.metrics()}
    prometheus_names: set[str] = set()
    for app in (
        stack.gateway.app,
        stack.orders.app if stack.orders else None,
        stack.payments.app if stack.payments else None,
    ):
        assert app is not None
        for family in app[REGISTRY].collect():
            prometheus_names.add(family.name)
    business = {n for n in prometheus_names if n.startswith(("gateway_", "orders_", "payments_"))}
    assert len(business) == 7
    assert not otel_names & prometheus_names


async def test_validation_failures_are_counted_by_field(stack: Stack) -> None:
    await stack.gateway.post("/api/order", json=order_body(quantity=0, card_number="1"))
    text = await (await stack.gateway.get("/metrics")).text()
    counted = {
        sample.labels["field"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "gateway_validation_failures"
        for sample in family.samples
    }
    assert counted == {"quantity": 1.0, "card_number": 1.0}
