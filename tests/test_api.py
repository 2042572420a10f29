"""The public API contract, through the gateway with all three services on real sockets."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from conftest import Capture, Stack, StackFactory
from harness.database import order_count
from harness.orders import DECLINED_CARD, order_body

pytestmark = pytest.mark.inprocess

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def assert_error(body: dict[str, Any], code: str) -> None:
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert TRACE_ID.match(body["trace_id"])


async def test_paid_order_returns_201_with_trace_id_and_traceresponse(stack: Stack) -> None:
    response = await stack.gateway.post("/api/order", json=order_body(quantity=3, unit_price=19.99))
    body = await response.json()

    assert response.status == 201
    assert body["status"] == "paid"
    assert body["total"] == 59.97
    assert re.match(r"^[0-9a-f]{32}$", body["order_id"])
    assert TRACE_ID.match(body["trace_id"])
    version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
    assert (version, trace_id) == ("00", body["trace_id"])
    assert int(flags, 16) & 0x01  # sampled
    assert re.match(r"^[0-9a-f]{16}$", span_id)


async def test_stored_order_can_be_read_back(stack: Stack) -> None:
    _, placed = await stack.place_order()
    response = await stack.gateway.get(f"/api/order/{placed['order_id']}")
    body = await response.json()

    assert response.status == 200
    assert body["order_id"] == placed["order_id"]
    assert body["status"] == "paid"
    assert body["card_last4"] == "4242"
    assert "card_number" not in body
    assert body["trace_id"] != placed["trace_id"]  # this read is a trace of its own


async def test_read_back_names_the_trace_that_created_the_order(stack: Stack, capture: Capture) -> None:
    _, placed = await stack.place_order()
    response = await stack.gateway.get(f"/api/order/{placed['order_id']}")
    body = await response.json()

    assert body["created_by_trace_id"] == placed["trace_id"] != body["trace_id"]
    assert response.headers["traceresponse"].split("-")[1] == body["trace_id"]
    created = capture.spans_of_trace(body["created_by_trace_id"])
    assert "place_order" in {s.name for s in created}  # the trace of the POST, not just any trace


async def test_declined_card_returns_402_and_stores_the_outcome(stack: Stack) -> None:
    status, body = await stack.place_order(order_body(card_number=DECLINED_CARD))

    assert status == 402
    assert body["status"] == "payment_declined"
    assert_error(body, "payment_declined")
    stored = await (await stack.gateway.get(f"/api/order/{body['order_id']}")).json()
    assert stored["status"] == "payment_declined"


async def test_malformed_json_is_400(stack: Stack) -> None:
    response = await stack.gateway.post("/api/order", data=b'{"item": ', headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert_error(await response.json(), "malformed_json")


async def test_body_that_is_not_an_object_is_422(stack: Stack) -> None:
    response = await stack.gateway.post("/api/order", json=[order_body()])
    assert response.status == 422
    assert_error(await response.json(), "validation_failed")


TEXT = "must be 1 to 200 characters"
UNSTORABLE = "must not contain control characters or unpaired surrogates"
QUANTITY_RANGE = "must be between 1 and 1000"
PRICE_RANGE = "must be greater than 0 and at most 1000000"
CARD_DIGITS = "must be 12 to 19 digits"
FIELD_ORDER = ["item", "customer_id", "quantity", "unit_price", "card_number"]


# The 422's exact words are part of the API: clients show them, docs/api.md prints them.
@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        ({"item": None}, {"item": "required string"}),
        ({"item": ""}, {"item": TEXT}),
        ({"item": "   "}, {"item": TEXT}),
        ({"item": "x" * 201}, {"item": TEXT}),
        ({"customer_id": 42}, {"customer_id": "must be a string"}),
        ({"quantity": None}, {"quantity": "required integer"}),
        ({"quantity": "2"}, {"quantity": "must be an integer"}),
        ({"quantity": True}, {"quantity": "must be an integer"}),
        ({"quantity": 2.5}, {"quantity": "must be an integer"}),
        ({"quantity": 2.0}, {"quantity": "must be an integer"}),
        ({"quantity": 0}, {"quantity": QUANTITY_RANGE}),
        ({"quantity": 1001}, {"quantity": QUANTITY_RANGE}),
        ({"unit_price": None}, {"unit_price": "required number"}),
        ({"unit_price": 0}, {"unit_price": PRICE_RANGE}),
        ({"unit_price": -5}, {"unit_price": PRICE_RANGE}),
        ({"unit_price": "12.50"}, {"unit_price": "must be a number"}),
        ({"unit_price": False}, {"unit_price": "must be a number"}),
        ({"unit_price": 1e300}, {"unit_price": PRICE_RANGE}),
        ({"unit_price": 10**400}, {"unit_price": "must be a number"}),  # no float holds it
        ({"card_number": None}, {"card_number": "required string"}),
        ({"card_number": "42424242424"}, {"card_number": CARD_DIGITS}),  # 11 digits
        ({"card_number": "42424242424242424242"}, {"card_number": CARD_DIGITS}),  # 20 digits
        ({"card_number": "4242-4242-4242-4242"}, {"card_number": CARD_DIGITS}),
        ({"card_number": "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢"}, {"card_number": CARD_DIGITS}),  # Arabic-Indic digits
        ({"card_number": "4242424242424242\n"}, {"card_number": CARD_DIGITS}),
        ({"card_number": "4242424242424241"}, {"card_number": "fails the Luhn check"}),
        ({"card_number": 4242424242424242}, {"card_number": "must be a string"}),
        (
            {"quantity": 0, "unit_price": 0, "card_number": "1"},
            {"quantity": QUANTITY_RANGE, "unit_price": PRICE_RANGE, "card_number": CARD_DIGITS},
        ),
        (
            {"item": None, "customer_id": "", "quantity": "1", "unit_price": None, "card_number": 1},
            {
                "item": "required string",
                "customer_id": TEXT,
                "quantity": "must be an integer",
                "unit_price": "required number",
                "card_number": "must be a string",
            },
        ),
    ],
)
async def test_invalid_fields_are_422_naming_each_field(
    stack: Stack, capture: Capture, changes: dict[str, Any], problems: dict[str, str]
) -> None:
    body = {k: v for k, v in order_body(**changes).items() if v is not None}
    status, answer = await stack.place_order(body)

    assert status == 422
    assert_error(answer, "validation_failed")
    assert answer["error"]["message"] == f"Invalid fields: {', '.join(sorted(problems))}."
    assert answer["error"]["fields"] == problems
    # Always listed in one order, as docs/api.md shows them.
    assert list(answer["error"]["fields"]) == [f for f in FIELD_ORDER if f in problems]
    assert not [s for s in capture.spans() if s.name == "POST /orders"], "nothing reaches order-service"


async def test_readme_example_of_a_422_word_for_word(stack: Stack) -> None:
    status, answer = await stack.place_order(order_body(quantity=0, card_number="1234"))

    assert status == 422
    assert json.dumps(answer["error"]) == (
        '{"code": "validation_failed", "message": "Invalid fields: card_number, quantity.", "fields": '
        '{"quantity": "must be between 1 and 1000", "card_number": "must be 12 to 19 digits"}}'
    )


# Unicode categories Cc and Cs, anywhere in the text (a lone surrogate is valid JSON: "\ud800").
UNSTORABLE_TEXT = ["\ud800", "book\udfff", "\x00", "bo\x00ok", "book\n", "\tbook", "\x1b[31mbook", "\x7f", "book\x85"]
# Everything else is kept as sent (less the surrounding whitespace).
STORABLE_TEXT = ["café", "📚 book", "a\xa0b", "書籍", "كتاب", "e\u0301", "👩\u200d💻", "\ufeffbook", "a\u2028b"]


@pytest.mark.parametrize("field", ["item", "customer_id"])
@pytest.mark.parametrize("text", UNSTORABLE_TEXT)
async def test_text_no_store_can_hold_is_422_at_every_service(stack: Stack, field: str, text: str) -> None:
    status, answer = await stack.place_order(order_body(**{field: text}))
    assert status == 422
    assert answer["error"] == {
        "code": "validation_failed",
        "message": f"Invalid fields: {field}.",
        "fields": {field: UNSTORABLE},
    }
    # order-service refuses it too when called directly, and stores nothing.
    assert stack.orders is not None
    async with stack.gateway.session.post(f"{stack.orders.url}/orders", json=order_body(**{field: text})) as response:
        assert response.status == 422
        assert (await response.json())["error"]["fields"] == {field: UNSTORABLE}
    assert order_count(stack.orders_settings.database_url) == 0


@pytest.mark.parametrize("text", STORABLE_TEXT)
async def test_any_other_text_is_kept(stack: Stack, text: str) -> None:
    status, placed = await stack.place_order(order_body(item=f" {text} ", customer_id=text))
    assert status == 201
    stored = await (await stack.gateway.get(f"/api/order/{placed['order_id']}")).json()
    assert (stored["item"], stored["customer_id"]) == (text.strip(), text.strip())


async def test_payment_service_names_every_invalid_field(stack: Stack) -> None:
    assert stack.payments is not None
    body = {"order_id": "\ud800" * 32, "amount": True, "card_number": "\uff14\uff12\uff14\uff12"}  # full-width digits
    async with stack.gateway.session.post(f"{stack.payments.url}/payments", json=body) as response:
        assert response.status == 422
        assert (await response.json())["error"] == {
            "code": "validation_failed",
            "message": "Invalid payment request.",
            "fields": {
                "order_id": "must be 32 lowercase hex digits",
                "amount": "must be a number greater than 0",
                "card_number": "must be a string of digits",
            },
        }


async def test_non_finite_price_is_422(stack: Stack) -> None:
    raw = b'{"item": "book", "quantity": 1, "unit_price": NaN, "customer_id": "c", "card_number": "4242424242424242"}'
    response = await stack.gateway.post("/api/order", data=raw)
    assert response.status == 422
    assert set((await response.json())["error"]["fields"]) == {"unit_price"}


async def test_body_over_64_kib_is_413(stack: Stack) -> None:
    oversized = order_body(item="x" * (65 * 1024))
    response = await stack.gateway.post("/api/order", json=oversized)
    assert response.status == 413
    assert_error(await response.json(), "payload_too_large")


async def test_chunked_body_over_64_kib_is_413(stack: Stack) -> None:
    async def chunks() -> Any:
        for _ in range(80):
            yield b" " * 1024

    response = await stack.gateway.post("/api/order", data=chunks())
    assert response.status == 413
    assert_error(await response.json(), "payload_too_large")


async def test_unknown_path_is_json_404(stack: Stack) -> None:
    response = await stack.gateway.get("/no/such/path")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert_error(await response.json(), "not_found")


async def test_wrong_method_is_json_405_with_allow(stack: Stack) -> None:
    response = await stack.gateway.delete("/api/order")
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert_error(await response.json(), "method_not_allowed")


@pytest.mark.parametrize("order_id", ["0" * 32, "not-an-order-id"])
async def test_unknown_order_is_404(stack: Stack, order_id: str) -> None:
    response = await stack.gateway.get(f"/api/order/{order_id}")
    assert response.status == 404
    assert_error(await response.json(), "order_not_found")


async def test_retry_with_same_idempotency_key_returns_same_order_and_charges_once(
    stack: Stack, capture: Capture
) -> None:
    first_status, first = await stack.place_order(order_body(), **{"Idempotency-Key": "retry-1"})
    second_status, second = await stack.place_order(order_body(), **{"Idempotency-Key": "retry-1"})

    assert first_status == second_status == 201
    assert {k: second[k] for k in ("order_id", "status", "total")} == {
        k: first[k] for k in ("order_id", "status", "total")
    }
    assert second["idempotent_replay"] is True
    assert capture.charges(first["order_id"]) == 1


async def test_same_idempotency_key_with_other_body_is_409(stack: Stack, capture: Capture) -> None:
    _, first = await stack.place_order(order_body(), **{"Idempotency-Key": "reused"})
    status, body = await stack.place_order(order_body(quantity=5), **{"Idempotency-Key": "reused"})

    assert status == 409
    assert_error(body, "idempotency_key_reused")
    assert body["order_id"] == first["order_id"]
    assert capture.charges(first["order_id"]) == 1


async def test_concurrent_requests_with_one_key_charge_once(start_stack: StackFactory, capture: Capture) -> None:
    stack = await start_stack(payments={"latency_min_ms": 100, "latency_max_ms": 100})
    results = await asyncio.gather(*(stack.place_order(order_body(), **{"Idempotency-Key": "burst"}) for _ in range(5)))

    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    order_ids = {body["order_id"] for _, body in results}
    assert len(order_ids) == 1
    assert capture.charges(order_ids.pop()) == 1


async def test_malformed_idempotency_key_is_422(stack: Stack) -> None:
    status, body = await stack.place_order(order_body(), **{"Idempotency-Key": "has spaces"})
    assert status == 422
    assert_error(body, "invalid_idempotency_key")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_operational_endpoints_answer(stack: Stack, path: str) -> None:
    response = await stack.gateway.get(path)
    assert response.status == 200
