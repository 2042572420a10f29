"""order-service's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from shop.common.app import client_session_ctx, new_application
from shop.common.baggage import inbound_baggage_middleware
from shop.common.downstream import RETRY_AFTER_S, declare_peer, probe_health
from shop.common.errors import ApiError
from shop.common.ops import new_registry, setup_ops
from shop.orders.engines import DatabaseUnavailable
from shop.orders.handlers import get_order, place_order
from shop.orders.keys import METRICS, PAYMENTS_SESSION, SETTINGS, STORE
from shop.orders.metrics import OrderMetrics
from shop.orders.store import OrderStore
from shop.settings import PAYMENT_SERVICE, OrdersSettings


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = await OrderStore.open(app[SETTINGS])
    yield
    await app[STORE].close()


@web.middleware
async def database_unavailable_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A database that is down, restarting or out of connections is a 503 to retry, never a 500 or a hang."""
    try:
        return await handler(request)
    except DatabaseUnavailable:
        raise ApiError(
            503,
            "database_unavailable",
            "The order database is unavailable; nothing was charged. Retry with the same Idempotency-Key.",
            retry_after_s=RETRY_AFTER_S,
        ) from None


def create_app(settings: OrdersSettings) -> web.Application:
    app = new_application([inbound_baggage_middleware, database_unavailable_middleware])
    registry = new_registry()
    app[SETTINGS] = settings
    app[METRICS] = OrderMetrics.create(registry)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(client_session_ctx(PAYMENTS_SESSION))
    declare_peer(PAYMENT_SERVICE, settings.payments_url)
    setup_ops(
        app,
        registry,
        {
            "database": lambda: app[STORE].ping(),
            PAYMENT_SERVICE: lambda: probe_health(app[PAYMENTS_SESSION], settings.payments_url),
        },
    )
    app.router.add_post("/orders", place_order)
    app.router.add_get("/orders/{order_id}", get_order)
    return app
