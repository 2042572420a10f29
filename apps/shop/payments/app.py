"""payment-service's application factory."""

from __future__ import annotations

from aiohttp import web

from shop.common.app import new_application
from shop.common.baggage import inbound_baggage_middleware
from shop.common.ops import new_registry, setup_ops
from shop.payments.handlers import create_payment
from shop.payments.keys import METRICS, PROCESSOR, SETTINGS
from shop.payments.metrics import PaymentMetrics
from shop.payments.processor import CardProcessor
from shop.settings import PaymentsSettings


async def _always_ready() -> None:
    """The simulated processor lives in this process: if we answer, it is there."""


def create_app(settings: PaymentsSettings) -> web.Application:
    app = new_application([inbound_baggage_middleware])
    registry = new_registry()
    app[SETTINGS] = settings
    app[PROCESSOR] = CardProcessor(settings)
    app[METRICS] = PaymentMetrics.create(registry)
    setup_ops(app, registry, {"processor": _always_ready})
    app.router.add_post("/payments", create_payment)
    return app
