"""Calling the next service: bounded in time, and every failure becomes a clear JSON error."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from shop.common.errors import ApiError

log = logging.getLogger(__name__)


def _code(service: str) -> str:
    return service.replace("-", "_")


async def call_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    timeout_s: float,
    payload: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send one request and return (status, JSON object); 503/504/502 ApiErrors when that fails."""
    try:
        async with session.request(
            method,
            url,
            json=payload,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            status = response.status
            body = await response.json(content_type=None)
    except TimeoutError:
        log.warning("downstream timed out", extra={"peer.service": service, "timeout_s": timeout_s})
        raise ApiError(504, f"{_code(service)}_timeout", f"{service} did not answer within {timeout_s:g} s.") from None
    except aiohttp.ClientConnectionError as exc:
        log.warning("downstream unreachable", extra={"peer.service": service, "error": type(exc).__name__})
        raise ApiError(503, f"{_code(service)}_unavailable", f"{service} is unavailable.") from None
    except (aiohttp.ClientResponseError, json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        log.error("downstream answered without a JSON object", extra={"peer.service": service, "status": status})
        raise ApiError(502, f"{_code(service)}_bad_response", f"{service} gave an unreadable answer.")
    return status, body


async def probe_health(session: aiohttp.ClientSession, base_url: str) -> None:
    """A readiness check: the next service answers its liveness endpoint with 200."""
    async with session.get(f"{base_url}/healthz", timeout=aiohttp.ClientTimeout(total=0.5)) as response:
        if response.status != 200:
            raise RuntimeError(f"{base_url}/healthz answered {response.status}")
