"""order-service's API: place an order (store, charge, record the outcome) and read one back."""

from __future__ import annotations

import logging

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

from shop.common.downstream import RETRY_AFTER_S
from shop.common.errors import ApiError, read_json_object
from shop.common.faults import database_delay_ms
from shop.common.ops import trace_exemplar
from shop.common.orders_api import (
    FINAL_STATUSES,
    ORDER_ID_PATTERN,
    PAID,
    PAYMENT_DECLINED,
    PAYMENT_FAILED,
    OrderRequest,
    parse_idempotency_key,
    parse_order_request,
)
from shop.orders.keys import METRICS, PAYMENTS_SESSION, SETTINGS, STORE
from shop.orders.payments_client import request_payment
from shop.orders.store import DuplicateIdempotencyKey, Order
from shop.telemetry import kept_trace_id, trace_fields

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


def order_response(order: Order, *, replayed: bool = False) -> web.Response:
    """201 for a paid order, 402 for a declined one: the only outcomes that get here
    (a failed payment raises its 502 in ``_charge``)."""
    fields: dict[str, object] = {"order_id": order.order_id, "status": order.status, "total": order.total}
    if replayed:
        fields["idempotent_replay"] = True
    if order.status == PAYMENT_DECLINED:
        raise ApiError(402, "payment_declined", "The card was declined.", fields=fields)
    return web.json_response({**fields, **trace_fields()}, status=201)


async def _existing_order(request: web.Request, key: str, order_request: OrderRequest) -> Order | None:
    order = await request.app[STORE].find_by_idempotency_key(key)
    if order is not None and order.request_fingerprint != order_request.fingerprint():
        request.app[METRICS].idempotency_conflicts.inc(exemplar=trace_exemplar())
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request body.",
            fields={"order_id": order.order_id},
        )
    return order


async def _find_or_create(
    request: web.Request, key: str | None, order_request: OrderRequest, delay_ms: int
) -> tuple[Order, bool]:
    """The order this request is about, and whether it already existed."""
    store = request.app[STORE]
    if key is not None:
        existing = await _existing_order(request, key, order_request)
        if existing is not None:
            return existing, True
    try:
        return await store.create(order_request, key, kept_trace_id(), delay_ms), False
    except DuplicateIdempotencyKey:
        # A concurrent request with the same key won the insert: treat this one as its retry.
        existing = await _existing_order(request, key, order_request) if key is not None else None
        if existing is None:
            raise
        return existing, True


def _record_outcome(request: web.Request, span: Span, order: Order) -> None:
    span.set_attribute("order.status", order.status)
    attributes = {"order.status": order.status}
    request.app[METRICS].placed.add(1, attributes)
    request.app[METRICS].value.record(order.total, attributes)


async def _charge(request: web.Request, span: Span, order: Order, card_number: str) -> Order:
    """Have payment-service charge the order and store the outcome, whatever it is."""
    store = request.app[STORE]
    try:
        payment = await request_payment(
            request.app[PAYMENTS_SESSION], request.app[SETTINGS], order.order_id, order.total, card_number
        )
    except ApiError as error:
        order = await store.set_status(order, PAYMENT_FAILED, None)
        _record_outcome(request, span, order)
        span.set_status(StatusCode.ERROR, error.code)
        log.error("payment failed", extra={"order.id": order.order_id, "error.code": error.code})
        error.fields.update({"order_id": order.order_id, "status": order.status, "total": order.total})
        raise
    order = await store.set_status(order, PAID if payment.authorized else PAYMENT_DECLINED, payment.payment_id)
    _record_outcome(request, span, order)
    log.info("order %s", order.status, extra={"order.id": order.order_id, "order.total": order.total})
    return order


def _in_progress(request: web.Request, order: Order) -> ApiError:
    request.app[METRICS].idempotency_conflicts.inc(exemplar=trace_exemplar())
    return ApiError(
        409,
        "idempotency_key_in_progress",
        "A request with this Idempotency-Key is still being processed.",
        fields={"order_id": order.order_id},
        # Until it ends, or its claim runs out if its replica died mid-charge.
        retry_after_s=RETRY_AFTER_S,
    )


async def _claim_retry(request: web.Request, order: Order) -> Order | web.Response:
    """Take the right to charge an order an earlier request left unpaid; or the answer when another
    request, on this replica or another, holds that right or has just used it."""
    store = request.app[STORE]
    claimed = await store.claim_charge(order)
    if claimed is not None:
        request.app[METRICS].payment_retries.inc(exemplar=trace_exemplar())
        log.info("retrying payment", extra={"order.id": order.order_id})
        return claimed
    current = await store.get(order.order_id)
    if current is not None and current.status in FINAL_STATUSES:
        return _replay(request, current)
    raise _in_progress(request, order)


def _replay(request: web.Request, order: Order) -> web.Response:
    request.app[METRICS].idempotent_replays.inc(exemplar=trace_exemplar())
    log.info("idempotent replay", extra={"order.id": order.order_id, "order.status": order.status})
    return order_response(order, replayed=True)


async def place_order(request: web.Request) -> web.Response:
    order_request = parse_order_request(await read_json_object(request))
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    delay_ms = database_delay_ms()
    if delay_ms and not request.app[STORE].supports_delay:
        raise ApiError(
            422,
            "fault_not_supported",
            "The slow-database fault needs order-service on PostgreSQL: SQLite runs one statement at a time, "
            "so a slow one would hold up every other order.",
            details={"fields": {"X-Fault-DB-Delay-Ms": "unsupported"}},
        )
    with tracer.start_as_current_span(
        "place_order",
        attributes={
            "order.item": order_request.item,
            "order.quantity": order_request.quantity,
            "order.unit_price": order_request.unit_price,
            "order.total": order_request.total,
            "customer.id": order_request.customer_id,
            "idempotency.key_present": key is not None,
        },
        # ApiErrors are expected outcomes (409, a failed payment); _charge marks the failures itself.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        order, existed = await _find_or_create(request, key, order_request, delay_ms)
        span.set_attributes({"order.id": order.order_id, "idempotency.replayed": existed})
        if existed:
            if order.status in FINAL_STATUSES:
                return _replay(request, order)
            # A new order is claimed by the request that stored it; a retry must claim it first.
            claimed = await _claim_retry(request, order)
            if isinstance(claimed, web.Response):
                return claimed
            order = claimed
        order = await _charge(request, span, order, order_request.card_number)
        return order_response(order)


async def get_order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    order = await request.app[STORE].get(order_id) if ORDER_ID_PATTERN.match(order_id) else None
    if order is None:
        raise ApiError(404, "order_not_found", f"No order {order_id!r}.")
    return web.json_response({**order.public(), **trace_fields()})
