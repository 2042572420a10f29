"""payment-service's API: ``POST /payments`` charges a card for an order."""

from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shop.common.errors import ApiError, read_json_object
from shop.common.faults import PaymentFaults
from shop.common.ops import trace_exemplar
from shop.common.orders_api import ORDER_ID_PATTERN
from shop.common.validation import FieldMessages, validate_body
from shop.payments.keys import METRICS, PROCESSOR, SETTINGS
from shop.payments.processor import DECLINED, Charge, ProcessorUnavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class PaymentRequest(BaseModel):
    """What order-service sends. Strict: no bool for a number, no "2" for 2."""

    model_config = ConfigDict(strict=True, frozen=True)

    order_id: Annotated[str, StringConstraints(pattern=ORDER_ID_PATTERN.pattern)]
    amount: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    card_number: Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]


# One message per field, whatever is wrong with it.
PAYMENT_MESSAGES: dict[str, FieldMessages] = {
    "order_id": {"value": "must be 32 lowercase hex digits"},
    "amount": {"value": "must be a number greater than 0"},
    "card_number": {"value": "must be a string of digits"},
}


def _record_faults(request: web.Request, faults: PaymentFaults) -> None:
    settings = request.app[SETTINGS]
    counter = request.app[METRICS].injected_faults
    if faults.delay_ms or settings.extra_delay_ms:
        counter.labels(fault="delay").inc(exemplar=trace_exemplar())
    if faults.fail:
        counter.labels(fault="failure").inc(exemplar=trace_exemplar())


async def create_payment(request: web.Request) -> web.Response:
    payment = validate_body(
        PaymentRequest, await read_json_object(request), PAYMENT_MESSAGES, "Invalid payment request."
    )
    order_id, amount, card_number = payment.order_id, payment.amount, payment.card_number
    faults = PaymentFaults.from_baggage()
    metrics = request.app[METRICS]
    _record_faults(request, faults)

    with tracer.start_as_current_span(
        "processor.authorize",
        attributes={
            "order.id": order_id,
            "payment.amount": amount,
            "payment.card.last4": card_number[-4:],
            "fault.delay_ms": faults.delay_ms,
            "fault.fail": faults.fail,
        },
    ) as span:
        charge: Charge | None = None
        try:
            charge = await request.app[PROCESSOR].charge_card(order_id, amount, card_number, faults)
            span.set_attributes(
                {
                    "payment.id": charge.payment_id,
                    "payment.outcome": charge.outcome,
                    "payment.duplicate": charge.duplicate,
                }
            )
        except ProcessorUnavailable as exc:
            span.set_attribute("payment.outcome", "failed")
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, "processor unavailable")

    if charge is None:
        metrics.authorizations.add(1, {"payment.outcome": "failed"})
        log.error("payment failed: processor unavailable", extra={"order.id": order_id})
        raise ApiError(503, "processor_unavailable", "The card processor is unavailable; nothing was charged.")
    if charge.duplicate:
        metrics.duplicate_charges_prevented.inc(exemplar=trace_exemplar())
    else:
        metrics.authorizations.add(1, {"payment.outcome": charge.outcome})
    log.info(
        "payment %s",
        charge.outcome,
        extra={"order.id": order_id, "payment.id": charge.payment_id, "payment.duplicate": charge.duplicate},
    )
    return _charge_response(charge)


def _charge_response(charge: Charge) -> web.Response:
    fields = {"payment_id": charge.payment_id, "order_id": charge.order_id, "status": charge.outcome}
    if charge.outcome == DECLINED:
        raise ApiError(402, "card_declined", "The card was declined.", fields=fields)
    return web.json_response(fields, status=200)
