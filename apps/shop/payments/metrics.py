"""payment-service's instruments: OTel (exported over OTLP) and prometheus-client (/metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter as OtelCounter
from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class PaymentMetrics:
    authorizations: OtelCounter
    injected_faults: Counter
    duplicate_charges_prevented: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PaymentMetrics:
        meter = metrics.get_meter("shop.payments")
        return cls(
            authorizations=meter.create_counter(
                "payments.authorizations",
                unit="{authorization}",
                description="Card authorizations by outcome (authorized, declined, failed).",
            ),
            injected_faults=Counter(
                "payments_injected_faults",
                "Faults the simulated processor injected, by kind (delay, failure).",
                ["fault"],
                registry=registry,
            ),
            duplicate_charges_prevented=Counter(
                "payments_duplicate_charges_prevented",
                "Charges for an already charged order, answered from the ledger instead of charging again.",
                registry=registry,
            ),
        )
