"""The order request both the gateway and the order service accept, and its validation."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from shop.common.errors import ApiError

MIN_QUANTITY, MAX_QUANTITY = 1, 1000
MAX_UNIT_PRICE = 1_000_000
MAX_TEXT_LENGTH = 200
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


@dataclass(frozen=True)
class OrderRequest:
    item: str
    quantity: int
    unit_price: float
    customer_id: str
    card_number: str

    @property
    def card_last4(self) -> str:
        return self.card_number[-4:]

    @property
    def total(self) -> float:
        exact = Decimal(str(self.unit_price)) * self.quantity
        return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))

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
        return {
            "item": self.item,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "customer_id": self.customer_id,
            "card_number": self.card_number,
        }


def _text_field(payload: dict[str, Any], name: str, problems: dict[str, str]) -> str:
    value = payload.get(name)
    if not isinstance(value, str):
        problems[name] = "required string" if value is None else "must be a string"
        return ""
    stripped = value.strip()
    if not stripped or len(stripped) > MAX_TEXT_LENGTH:
        problems[name] = f"must be 1 to {MAX_TEXT_LENGTH} characters"
    return stripped


def parse_order_request(payload: dict[str, Any]) -> OrderRequest:
    """Validate a decoded JSON body; a 422 names every field that is wrong."""
    problems: dict[str, str] = {}
    item = _text_field(payload, "item", problems)
    customer_id = _text_field(payload, "customer_id", problems)

    quantity = payload.get("quantity")
    if quantity is None:
        problems["quantity"] = "required integer"
    elif isinstance(quantity, bool) or not isinstance(quantity, int):
        problems["quantity"] = "must be an integer"
    elif not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        problems["quantity"] = f"must be between {MIN_QUANTITY} and {MAX_QUANTITY}"

    unit_price = payload.get("unit_price")
    if unit_price is None:
        problems["unit_price"] = "required number"
    elif isinstance(unit_price, bool) or not isinstance(unit_price, int | float):
        problems["unit_price"] = "must be a number"
    elif not math.isfinite(unit_price) or not 0 < unit_price <= MAX_UNIT_PRICE:
        problems["unit_price"] = f"must be greater than 0 and at most {MAX_UNIT_PRICE}"

    card_number = payload.get("card_number")
    if card_number is None:
        problems["card_number"] = "required string"
    elif not isinstance(card_number, str):
        problems["card_number"] = "must be a string"
    elif not card_number.isascii() or not card_number.isdigit() or not 12 <= len(card_number) <= 19:
        problems["card_number"] = "must be 12 to 19 digits"
    elif not luhn_valid(card_number):
        problems["card_number"] = "fails the Luhn check"

    if problems:
        raise ApiError(
            422,
            "validation_failed",
            "Invalid fields: " + ", ".join(sorted(problems)) + ".",
            details={"fields": problems},
        )
    assert isinstance(quantity, int)
    assert isinstance(unit_price, int | float)
    assert isinstance(card_number, str)
    return OrderRequest(item, quantity, float(unit_price), customer_id, card_number)


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
