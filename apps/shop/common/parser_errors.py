"""JSON answers for the errors aiohttp's HTTP parser sends itself.

A header line over 8,190 bytes, a malformed request line or an unknown method never reach a
handler or a middleware: aiohttp's ``RequestHandler.handle_error`` answers them with a plain-text
body that quotes part of the offending input. aiohttp has no hook for that answer, so this
replaces the method, process-wide, in the start-up step (``shop.common.startup``), keeping
aiohttp's own logging and its rule that the connection closes after such an error.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shop.common.errors import HTTP_ERROR_CODES
from shop.telemetry import trace_fields

_aiohttp_handle_error = RequestHandler.handle_error


def _json_handle_error(
    self: RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    # aiohttp's version logs the error and raises if part of a response has gone out already.
    _aiohttp_handle_error(self, request, status, exc, message)
    body = {
        "error": {"code": HTTP_ERROR_CODES.get(status, "http_error"), "message": f"{HTTPStatus(status).phrase}."},
        # All zeros: the request was refused before any span began.
        **trace_fields(),
    }
    response = web.json_response(body, status=status)
    response.force_close()
    return response


def install_json_parser_errors() -> None:
    """Make every service in this process answer parser-level errors in JSON (idempotent)."""
    RequestHandler.handle_error = _json_handle_error  # type: ignore[method-assign]
