"""order-service's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from shop.common.baggage import inbound_baggage_middleware
from shop.common.downstream import probe_health
from shop.common.errors import MAX_BODY_BYTES, error_middleware, trace_response_middleware
from shop.common.ops import new_registry, setup_ops
from shop.orders.handlers import get_order, place_order
from shop.orders.keys import IN_FLIGHT, METRICS, PAYMENTS_SESSION, SETTINGS, STORE
from shop.orders.metrics import OrderMetrics
from shop.orders.store import OrderStore
from shop.settings import OrdersSettings


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = await OrderStore.open(app[SETTINGS].database_path)
    yield
    await app[STORE].close()


async def _payments_session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[PAYMENTS_SESSION] = session
        yield


def create_app(settings: OrdersSettings) -> web.Application:
    app = web.Application(
        middlewares=[trace_response_middleware, error_middleware, inbound_baggage_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    registry = new_registry()
    app[SETTINGS] = settings
    app[METRICS] = OrderMetrics.create(registry)
    app[IN_FLIGHT] = set()
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_payments_session_ctx)
    setup_ops(
        app,
        registry,
        {
            "database": lambda: app[STORE].ping(),
            "payment-service": lambda: probe_health(app[PAYMENTS_SESSION], settings.payments_url),
        },
    )
    app.router.add_post("/orders", place_order)
    app.router.add_get("/orders/{order_id}", get_order)
    return app
