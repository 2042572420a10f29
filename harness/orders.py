"""The test cards and the order every test, ``make demo``, ``make smoke`` and ``make load`` start from.

Standard library only: the Locust image and a bare ``python3`` import it too.
"""

from __future__ import annotations

from typing import Any

# Card numbers like real processors' test cards (both pass the Luhn check).
GOOD_CARD = "4242424242424242"
# The simulated processor declines this one; tests/test_harness.py checks it is the app's own
# shop.payments.processor.DECLINED_CARD, which the app cannot import from here.
DECLINED_CARD = "4000000000000002"
# The gateway's fault-injection headers (shop.gateway.edge), honoured with GATEWAY_ALLOW_FAULT_HEADERS=true.
DELAY_HEADER = "X-Fault-Payment-Delay-Ms"
FAIL_HEADER = "X-Fault-Payment-Fail"
# The slow database (order-service on PostgreSQL only): its INSERT waits this many ms inside the server.
DB_DELAY_HEADER = "X-Fault-DB-Delay-Ms"


def order_body(**overrides: Any) -> dict[str, Any]:
    """A valid order that gets paid; ``overrides`` replace or add fields."""
    return {
        "item": "book",
        "quantity": 2,
        "unit_price": 12.5,
        "customer_id": "customer-1",
        "card_number": GOOD_CARD,
        **overrides,
    }
