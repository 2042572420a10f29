"""order-service's side of payment-service's API."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from shop.common.downstream import call_json
from shop.common.errors import ApiError
from shop.settings import PAYMENT_SERVICE, OrdersSettings


@dataclass(frozen=True)
class PaymentResult:
    payment_id: str
    authorized: bool


async def request_payment(
    session: aiohttp.ClientSession,
    settings: OrdersSettings,
    order_id: str,
    amount: float,
    card_number: str,
) -> PaymentResult:
    """Authorized or declined; any other answer raises an ApiError for the caller to pass on."""
    answer = await call_json(
        session,
        "POST",
        f"{settings.payments_url}/payments",
        service=PAYMENT_SERVICE,
        timeout_s=settings.payments_timeout_s,
        payload={"order_id": order_id, "amount": amount, "card_number": card_number},
    )
    status, body = answer.status, answer.body
    payment_id = body.get("payment_id")
    if status in (200, 402) and isinstance(payment_id, str):
        return PaymentResult(payment_id=payment_id, authorized=status == 200)
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    raise ApiError(
        502,
        "payment_failed",
        "The payment could not be completed; nothing was charged. Retry with the same Idempotency-Key.",
        details={"cause": code or f"http_{status}"},
    )
