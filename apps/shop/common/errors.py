"""JSON errors for every failure, and the trace ID on every response.

The OpenTelemetry server middleware is always the outermost one, so the
middlewares here run inside the server span and see its context.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.instrumentation.propagators import TraceResponsePropagator
from opentelemetry.trace import StatusCode

from shop.sampling import OT_KEY
from shop.telemetry import trace_fields

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

# aiohttp raises these itself; each gets a stable machine-readable code.
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
    504: "gateway_timeout",
}


class ApiError(Exception):
    """An expected failure, answered as ``{"error": {...}, "trace_id": ...}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        # Extra keys inside "error" (e.g. which fields were invalid) ...
        self.details = dict(details or {})
        # ... and beside it (e.g. the order_id of a declined order).
        self.fields = dict(fields or {})
        # For a 503: when a retry may succeed, sent as Retry-After.
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return {
            **self.fields,
            "error": {"code": self.code, "message": self.message, **self.details},
            **trace_fields(),
        }


def error_response(error: ApiError) -> web.Response:
    # Every error answer is logged once, here, inside the request's span.
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    fields = sorted(error.details.get("fields", {}))
    log.log(
        level,
        "request failed: %s",
        error.code,
        extra={"error.code": error.code, "http.response.status_code": error.status, "error.fields": fields},
    )
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; never a stack trace or an HTML page."""
    try:
        return await handler(request)
    except ApiError as error:
        if error.status >= 500:
            trace.get_current_span().set_status(StatusCode.ERROR, error.code)
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_ERROR_CODES.get(exc.status, "http_error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = error_response(ApiError(exc.status, code, exc.reason))
        if headers:
            response.headers.update(headers)
        return response
    except Exception as exc:
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        log.exception("unhandled error", extra={"url.path": request.path})
        return error_response(ApiError(500, "internal_error", "The server failed to handle the request."))


# Writes ``traceresponse: 00-{trace}-{span}-{flags}`` for the active span (nothing without one) and
# lists it in Access-Control-Expose-Headers. The aiohttp server instrumentation (0.66b1) never calls
# a response propagator itself, unlike contrib's ASGI/WSGI ones: hence this middleware.
TRACE_RESPONSE = TraceResponsePropagator()
EXPOSED_HEADERS = "traceresponse, tracestate"


@web.middleware
async def trace_response_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the W3C ``traceresponse`` header so a caller can find its trace, and the trace's OpenTelemetry
    ``tracestate`` entry (``ot=th:…;rv:…``, which traceresponse cannot carry), so that the shop page
    exports its own spans only for kept traces and with the threshold the services' spans carry."""
    response = await handler(request)
    TRACE_RESPONSE.inject(response.headers)
    ot = trace.get_current_span().get_span_context().trace_state.get(OT_KEY)
    if ot is not None:
        response.headers["tracestate"] = f"{OT_KEY}={ot}"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


def payload_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"The body must be at most {max_bytes} bytes.")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object: 413 if too large, 400 if not JSON, 422 if not an object."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise payload_too_large(MAX_BODY_BYTES)
    raw = await request.read()  # aiohttp enforces client_max_size while reading a chunked body
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "The body is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "validation_failed", "The body must be a JSON object.", details={"fields": {}})
    return payload
