"""Per-request fault injection, carried from the gateway to payment-service in W3C baggage.

The gateway sets these entries only from its own fault headers, and only when the
operator enables them; it drops whatever baggage a client sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import baggage

DELAY_MS = "fault.payment.delay_ms"
FAIL = "fault.payment.fail"
MAX_DELAY_MS = 60_000
# The slow database: order-service's INSERT waits this long inside PostgreSQL. At most 2 s, below the
# gateway's 3 s wait for order-service, so the order still answers and its trace shows the slow DB span.
DB_DELAY_MS = "fault.db.delay_ms"
MAX_DB_DELAY_MS = 2_000


@dataclass(frozen=True)
class PaymentFaults:
    delay_ms: int = 0
    fail: bool = False

    @classmethod
    def from_baggage(cls) -> PaymentFaults:
        """Read from the active context; anything malformed counts as absent."""
        raw_delay = baggage.get_baggage(DELAY_MS)
        raw_fail = baggage.get_baggage(FAIL)
        delay_ms = 0
        if isinstance(raw_delay, str) and raw_delay.isdigit():
            delay_ms = min(int(raw_delay), MAX_DELAY_MS)
        return cls(delay_ms=delay_ms, fail=raw_fail == "true")


def database_delay_ms() -> int:
    """The slow-database fault of the active context, in milliseconds; anything malformed counts as absent."""
    raw = baggage.get_baggage(DB_DELAY_MS)
    return min(int(raw), MAX_DB_DELAY_MS) if isinstance(raw, str) and raw.isascii() and raw.isdigit() else 0
