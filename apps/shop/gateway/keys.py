"""Typed application state of the gateway."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from shop.gateway.metrics import GatewayMetrics
from shop.settings import GatewaySettings

SETTINGS = web.AppKey("settings", GatewaySettings)
ORDERS_SESSION = web.AppKey("orders_session", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", GatewayMetrics)
