"""gateway's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from shop.common.downstream import probe_health
from shop.common.errors import MAX_BODY_BYTES, error_middleware, trace_response_middleware
from shop.common.ops import new_registry, setup_ops
from shop.gateway.edge import edge_context_middleware
from shop.gateway.handlers import get_order, place_order
from shop.gateway.keys import METRICS, ORDERS_SESSION, SETTINGS
from shop.gateway.metrics import GatewayMetrics
from shop.settings import GatewaySettings


async def _orders_session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[ORDERS_SESSION] = session
        yield


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        middlewares=[trace_response_middleware, error_middleware, edge_context_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    registry = new_registry()
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics.create(registry)
    app.cleanup_ctx.append(_orders_session_ctx)
    setup_ops(app, registry, {"order-service": lambda: probe_health(app[ORDERS_SESSION], settings.orders_url)})
    app.router.add_post("/api/order", place_order)
    app.router.add_get("/api/order/{order_id}", get_order)
    return app
