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
