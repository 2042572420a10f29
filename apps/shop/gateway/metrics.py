"""gateway's instruments. Its HTTP metrics come from the OTel instrumentations; these are its own."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class GatewayMetrics:
    validation_failures: Counter
    fault_headers: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GatewayMetrics:
        return cls(
            validation_failures=Counter(
                "gateway_validation_failures",
                "Order fields rejected by validation, by field.",
                ["field"],
                registry=registry,
            ),
            fault_headers=Counter(
                "gateway_fault_headers",
                "Requests carrying fault-injection headers, by outcome (applied, ignored).",
                ["outcome"],
                registry=registry,
            ),
        )
