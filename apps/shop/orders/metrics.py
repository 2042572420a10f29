"""order-service's instruments: OTel (exported over OTLP) and prometheus-client (/metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter as OtelCounter
from opentelemetry.metrics import Histogram as OtelHistogram
from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class OrderMetrics:
    placed: OtelCounter
    value: OtelHistogram
    idempotent_replays: Counter
    idempotency_conflicts: Counter
    payment_retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> OrderMetrics:
        meter = metrics.get_meter("shop.orders")
        return cls(
            placed=meter.create_counter(
                "orders.placed",
                unit="{order}",
                description="Orders that reached an outcome, by order.status (paid, payment_declined, payment_failed).",
            ),
            value=meter.create_histogram(
                "orders.value",
                unit="{USD}",
                description="Order totals in US dollars, by order.status.",
                explicit_bucket_boundaries_advisory=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000],
            ),
            idempotent_replays=Counter(
                "orders_idempotent_replays",
                "Retries with a known Idempotency-Key answered from the stored order.",
                registry=registry,
            ),
            idempotency_conflicts=Counter(
                "orders_idempotency_conflicts",
                "Requests rejected with 409: key reused with another body, or still in progress.",
                registry=registry,
            ),
            payment_retries=Counter(
                "orders_payment_retries",
                "Payments attempted again for an order whose earlier payment failed.",
                registry=registry,
            ),
        )
