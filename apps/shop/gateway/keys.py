"""Typed application state of the gateway."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from shop.gateway.metrics import GatewayMetrics
from shop.settings import GatewaySettings

SETTINGS = web.AppKey("settings", GatewaySettings)
ORDERS_SESSION = web.AppKey("orders_session", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", GatewayMetrics)
# The forwarding of the page's spans to the Collector (shop.gateway.browser_traces).
BROWSER_TRACES_SESSION = web.AppKey("browser_traces_session", aiohttp.ClientSession)
