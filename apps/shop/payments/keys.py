"""Typed application state of payment-service."""

from __future__ import annotations

from aiohttp import web

from shop.payments.metrics import PaymentMetrics
from shop.payments.processor import CardProcessor
from shop.settings import PaymentsSettings

SETTINGS = web.AppKey("settings", PaymentsSettings)
PROCESSOR = web.AppKey("processor", CardProcessor)
METRICS = web.AppKey("metrics", PaymentMetrics)
