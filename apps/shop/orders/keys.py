"""Typed application state of order-service."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from shop.orders.metrics import OrderMetrics
from shop.orders.store import OrderStore
from shop.settings import OrdersSettings

SETTINGS = web.AppKey("settings", OrdersSettings)
STORE = web.AppKey("store", OrderStore)
PAYMENTS_SESSION = web.AppKey("payments_session", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", OrderMetrics)
