"""The order request both the gateway and the order service accept, and its validation."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from shop.common.errors import ApiError
from shop.common.validation import TEXT_MESSAGES, FieldMessages, Text, validate_body

MIN_QUANTITY, MAX_QUANTITY = 1, 1000
MAX_UNIT_PRICE = 1_000_000
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
ORDER_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

# Order statuses, as stored and as returned.
PENDING = "pending"
PAID = "paid"
PAYMENT_DECLINED = "payment_declined"
PAYMENT_FAILED = "payment_failed"
FINAL_STATUSES = frozenset({PAID, PAYMENT_DECLINED})


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _passes_luhn(digits: str) -> str:
    if not luhn_valid(digits):
        raise PydanticCustomError("luhn", "fails the Luhn check")
    return digits


CardNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{12,19}$"), AfterValidator(_passes_luhn)]


class OrderRequest(BaseModel):
    """An order as the gateway and order-service accept it. Strict: no bool for a number, no "2" for 2."""

    model_config = ConfigDict(strict=True, frozen=True)

    # In the order the 422 lists them.
    item: Text
    customer_id: Text
    quantity: Annotated[int, Field(ge=MIN_QUANTITY, le=MAX_QUANTITY)]
    unit_price: Annotated[float, Field(gt=0, le=MAX_UNIT_PRICE, allow_inf_nan=False)]
    card_number: CardNumber

    @property
    def card_last4(self) -> str:
        return self.card_number[-4:]

    @property
    def exact_total(self) -> Decimal:
        """Quantity times the price as the client wrote it, to the cent."""
        return (Decimal(str(self.unit_price)) * self.quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    @property
    def total(self) -> float:
        return float(self.exact_total)

    def fingerprint(self) -> str:
        """Identifies the request for idempotency without holding the card number."""
        material = {
            "item": self.item,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "customer_id": self.customer_id,
            "card_last4": self.card_last4,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return self.model_dump()


ORDER_MESSAGES: dict[str, FieldMessages] = {
    "item": TEXT_MESSAGES,
    "customer_id": TEXT_MESSAGES,
    "quantity": {
        "required": "required integer",
        "type": "must be an integer",
        "value": f"must be between {MIN_QUANTITY} and {MAX_QUANTITY}",
    },
    "unit_price": {
        "required": "required number",
        "type": "must be a number",
        "value": f"must be greater than 0 and at most {MAX_UNIT_PRICE}",
    },
    "card_number": {"required": "required string", "type": "must be a string", "value": "must be 12 to 19 digits"},
}


def parse_order_request(payload: dict[str, Any]) -> OrderRequest:
    """Validate a decoded JSON body; a 422 names every field that is wrong."""
    return validate_body(OrderRequest, payload, ORDER_MESSAGES)


def parse_idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY_PATTERN.match(raw):
        raise ApiError(
            422,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.",
            details={"fields": {"Idempotency-Key": "invalid"}},
        )
    return raw
