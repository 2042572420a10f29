"""The public API: ``POST /api/order`` and ``GET /api/order/{order_id}``."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from shop.common.downstream import call_json
from shop.common.errors import ApiError, read_json_object
from shop.common.ops import trace_exemplar
from shop.common.orders_api import ORDER_ID_PATTERN, parse_idempotency_key, parse_order_request
from shop.gateway.keys import METRICS, ORDERS_SESSION, SETTINGS
from shop.settings import ORDER_SERVICE
from shop.telemetry import trace_fields

log = logging.getLogger(__name__)


async def _call_orders(request: web.Request, method: str, path: str, **kwargs: Any) -> web.Response:
    settings = request.app[SETTINGS]
    answer = await call_json(
        request.app[ORDERS_SESSION],
        method,
        f"{settings.orders_url}{path}",
        service=ORDER_SERVICE,
        timeout_s=settings.orders_timeout_s,
        **kwargs,
    )
    # One trace end to end, so this is the ID order-service saw too; set it in case it had none.
    # Retry-After travels with a 503 (order-service's database unavailable, its pool exhausted).
    headers = {"Retry-After": str(answer.retry_after_s)} if answer.retry_after_s is not None else None
    return web.json_response({**answer.body, **trace_fields()}, status=answer.status, headers=headers)


async def place_order(request: web.Request) -> web.Response:
    try:
        order_request = parse_order_request(await read_json_object(request))
    except ApiError as error:
        for field in error.details.get("fields", {}):
            request.app[METRICS].validation_failures.labels(field=field).inc(exemplar=trace_exemplar())
        raise
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    response = await _call_orders(
        request,
        "POST",
        "/orders",
        payload=order_request.to_json(),
        headers={"Idempotency-Key": key} if key else None,
    )
    # One line per order (errors are logged once, by error_middleware): the spans hold the steps.
    log.info(
        "order answered",
        extra={
            "order.item": order_request.item,
            "order.quantity": order_request.quantity,
            "customer.id": order_request.customer_id,
            "http.response.status_code": response.status,
        },
    )
    return response


async def get_order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    if not ORDER_ID_PATTERN.match(order_id):
        raise ApiError(404, "order_not_found", f"No order {order_id!r}.")
    return await _call_orders(request, "GET", f"/orders/{order_id}")
