"""Downstream services that are down, slow or failing: quick JSON answers, consistent orders, no double charge."""

from __future__ import annotations

import time

import pytest
from opentelemetry.trace import SpanKind

from conftest import TEST_TELEMETRY, Capture, ServeFn, Stack, StackFactory
from harness.orders import DELAY_HEADER, FAIL_HEADER, order_body
from harness.processes import free_port
from shop.payments.app import create_app as create_payments
from shop.settings import PaymentsSettings
from test_api import assert_error

pytestmark = pytest.mark.inprocess

KEY = {"Idempotency-Key": "order-42"}


async def stored_status(stack: Stack, order_id: str) -> str:
    response = await stack.gateway.get(f"/api/order/{order_id}")
    status: str = (await response.json())["status"]
    return status


async def test_payments_down_is_503_then_a_retry_completes_the_order(
    start_stack: StackFactory, serve: ServeFn, capture: Capture
) -> None:
    port = free_port()
    stack = await start_stack(payments_running=False, payments_port=port)

    status, body = await stack.place_order(order_body(), **KEY)
    assert status == 503
    assert_error(body, "payment_service_unavailable")
    assert body["status"] == "payment_failed"
    assert await stored_status(stack, body["order_id"]) == "payment_failed"

    # payment-service comes up on its port; the client retries with the same key.
    await serve(create_payments(PaymentsSettings(telemetry=TEST_TELEMETRY)), port=port)
    status, retried = await stack.place_order(order_body(), **KEY)
    assert status == 201
    assert retried["order_id"] == body["order_id"]
    assert await stored_status(stack, body["order_id"]) == "paid"
    assert capture.charges(body["order_id"]) == 1


async def test_slow_payments_time_out_with_504_and_a_retry_does_not_charge_twice(
    start_stack: StackFactory, capture: Capture
) -> None:
    # Without order-service's 0.1 s timeout this order would be paid, after the processor's 1 s.
    stack = await start_stack(payments={"extra_delay_ms": 1000}, orders={"payments_timeout_s": 0.1})

    status, body = await stack.place_order(order_body(), **KEY)
    assert status == 504
    assert_error(body, "payment_service_timeout")
    # The caller did not wait for the slow payment: the processor had not decided when the answer came.
    assert capture.charges(body["order_id"]) == 0
    assert await stored_status(stack, body["order_id"]) == "payment_failed"

    # The processor completes the charge after order-service gave up waiting for it.
    deadline = time.monotonic() + 30
    while not capture.charges(body["order_id"]) and time.monotonic() < deadline:
        await stack.gateway.get("/healthz")  # yields to the loop; bounded by the deadline
    assert capture.charges(body["order_id"]) == 1

    # The retry finds that charge in the processor's ledger (no wait, no second charge).
    status, retried = await stack.place_order(order_body(), **KEY)
    assert status == 201
    assert retried["order_id"] == body["order_id"]
    assert await stored_status(stack, body["order_id"]) == "paid"
    assert capture.charges(body["order_id"]) == 1


async def test_processor_failure_is_502_and_leaves_a_failed_order(start_stack: StackFactory, capture: Capture) -> None:
    stack = await start_stack(gateway={"allow_fault_headers": True})

    status, body = await stack.place_order(order_body(), **KEY, **{FAIL_HEADER: "true"})
    assert status == 502
    assert_error(body, "payment_failed")
    assert body["error"]["cause"] == "processor_unavailable"
    assert await stored_status(stack, body["order_id"]) == "payment_failed"
    assert capture.charges(body["order_id"]) == 0

    status, retried = await stack.place_order(order_body(), **KEY)
    assert status == 201
    assert retried["order_id"] == body["order_id"]
    assert capture.charges(body["order_id"]) == 1


async def test_failure_rate_from_settings_fails_payments(start_stack: StackFactory) -> None:
    stack = await start_stack(payments={"failure_rate": 1.0})
    status, body = await stack.place_order()
    assert status == 502
    assert body["error"]["cause"] == "processor_unavailable"


async def test_orders_down_is_503(start_stack: StackFactory) -> None:
    stack = await start_stack(orders_running=False)
    status, body = await stack.place_order()
    assert status == 503
    assert_error(body, "order_service_unavailable")


async def test_orders_slow_is_504_from_the_gateway(start_stack: StackFactory, capture: Capture) -> None:
    # Without the gateway's 0.1 s timeout this order would be paid, after the processor's 1 s.
    stack = await start_stack(payments={"extra_delay_ms": 1000}, gateway={"orders_timeout_s": 0.1})
    status, body = await stack.place_order()
    assert status == 504
    assert_error(body, "order_service_timeout")
    # The caller did not wait for the slow order-service: nothing downstream had finished yet.
    finished = {(s.name, s.kind) for s in capture.spans()}
    assert ("POST /orders", SpanKind.SERVER) not in finished
    assert ("processor.authorize", SpanKind.INTERNAL) not in finished


async def test_fault_delay_reaches_the_processor_only_when_allowed(start_stack: StackFactory, capture: Capture) -> None:
    delay = {DELAY_HEADER: "150"}

    ignored = await start_stack()
    status, _ = await ignored.place_order(order_body(), **delay)
    assert status == 201
    allowed = await start_stack(gateway={"allow_fault_headers": True})
    status, _ = await allowed.place_order(order_body(), **delay)
    assert status == 201
    # Published beyond loopback, the variable alone is not enough (docs/configuration.md#fault-headers-and-edge-trust).
    exposed = await start_stack(gateway={"allow_fault_headers": True, "public_address": "0.0.0.0"})
    status, _ = await exposed.place_order(order_body(), **delay)
    assert status == 201
    warnings = [r.log_record for r in capture.logs() if r.log_record.severity_text == "WARN"]
    assert [str(w.body).split(";")[0] for w in warnings] == [
        "fault headers are off: the gateway is reachable beyond loopback"
    ]

    processor = [s for s in capture.spans() if s.name == "processor.authorize" and s.attributes]
    assert [s.attributes["fault.delay_ms"] for s in processor if s.attributes] == [0, 150, 0]
    # The processor slept for it (a lower bound, which no machine can miss by being slow).
    started, ended = processor[1].start_time, processor[1].end_time
    assert started is not None
    assert ended is not None
    assert ended - started >= 150_000_000


async def test_client_baggage_is_dropped_at_the_edge(start_stack: StackFactory, capture: Capture) -> None:
    stack = await start_stack(gateway={"allow_fault_headers": True})
    status, _ = await stack.place_order(order_body(), baggage="fault.payment.fail=true,fault.payment.delay_ms=900")
    assert status == 201
    [processor] = [s for s in capture.spans() if s.name == "processor.authorize"]
    assert processor.attributes is not None
    assert (processor.attributes["fault.fail"], processor.attributes["fault.delay_ms"]) == (False, 0)


async def test_invalid_fault_header_is_422_when_allowed(start_stack: StackFactory) -> None:
    stack = await start_stack(gateway={"allow_fault_headers": True})
    status, body = await stack.place_order(order_body(), **{DELAY_HEADER: "soon"})
    assert status == 422
    assert_error(body, "invalid_fault_header")


async def test_readiness_follows_dependencies(start_stack: StackFactory) -> None:
    healthy = await start_stack()
    assert (await healthy.gateway.get("/readyz")).status == 200
    assert healthy.orders is not None
    async with healthy.gateway.session.get(f"{healthy.orders.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["checks"] == {"database": "ok", "payment-service": "ok"}

    no_payments = await start_stack(payments_running=False)
    assert no_payments.orders is not None
    async with no_payments.gateway.session.get(f"{no_payments.orders.url}/readyz") as response:
        assert response.status == 503
        assert (await response.json())["checks"]["payment-service"].startswith("failed")

    no_orders = await start_stack(orders_running=False)
    assert (await no_orders.gateway.get("/readyz")).status == 503
    assert (await no_orders.gateway.get("/healthz")).status == 200
