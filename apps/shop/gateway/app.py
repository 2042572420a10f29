"""gateway's application factory."""

from __future__ import annotations

import logging

from aiohttp import web

from shop.common.app import client_session_ctx, new_application
from shop.common.downstream import declare_peer, probe_health
from shop.common.ops import new_registry, setup_ops
from shop.gateway.browser_traces import setup_browser_traces
from shop.gateway.edge import edge_context_middleware
from shop.gateway.handlers import get_order, place_order
from shop.gateway.keys import BROWSER_TRACES_SESSION, METRICS, ORDERS_SESSION, SETTINGS
from shop.gateway.metrics import GatewayMetrics
from shop.gateway.page import ShopPage
from shop.settings import ORDER_SERVICE, GatewaySettings


def create_app(settings: GatewaySettings) -> web.Application:
    if settings.allow_fault_headers and not settings.honours_fault_headers:
        logging.getLogger(__name__).warning(
            "fault headers are off: the gateway is reachable beyond loopback; "
            "GATEWAY_ALLOW_FAULT_HEADERS_OFF_LOOPBACK=true as well would honour them",
            extra={"address": settings.public_address or settings.server.host},
        )
    app = new_application([edge_context_middleware])
    registry = new_registry()
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics.create(registry)
    app.cleanup_ctx.append(
        client_session_ctx(ORDERS_SESSION, connection_per_request=settings.orders_spread_over_replicas)
    )
    declare_peer(ORDER_SERVICE, settings.orders_url)
    setup_ops(app, registry, {ORDER_SERVICE: lambda: probe_health(app[ORDERS_SESSION], settings.orders_url)})
    app.cleanup_ctx.append(client_session_ctx(BROWSER_TRACES_SESSION))
    app.router.add_post("/api/order", place_order)
    app.router.add_get("/api/order/{order_id}", get_order)
    ShopPage(settings).add_routes(app)
    setup_browser_traces(app, settings.browser_traces_per_minute)
    return app
