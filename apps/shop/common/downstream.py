"""Calling the next service: bounded in time, and every failure becomes a clear JSON error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from shop.common.errors import ApiError

log = logging.getLogger(__name__)


# (peer.service, server.address, server.port) of every service this process calls.
_peers: set[tuple[str, str, int | None]] = set()


def _observe_peers(options: CallbackOptions) -> Iterable[Observation]:
    # A snapshot: the metric reader's thread calls this while an app being created may add a peer.
    for service, address, port in tuple(_peers):
        attributes: dict[str, str | int] = {"peer.service": service, "server.address": address}
        if port is not None:
            attributes["server.port"] = port
        yield Observation(1, attributes)


# The HTTP client metrics name the peer only by address and port; this info metric says which service
# answers there, so that Prometheus can draw the service map from calls counted whatever the sampling.
metrics.get_meter("shop.downstream").create_observable_gauge(
    "shop.peer.info",
    callbacks=[_observe_peers],
    description="1 for each service this one calls, by peer.service, server.address and server.port.",
)


def declare_peer(service: str, base_url: str) -> None:
    """Publish that ``service`` answers at ``base_url``: host and port as the aiohttp client
    instrumentation records them (``urlsplit``; no port when the URL has none)."""
    url = urlsplit(base_url)
    if url.hostname is None:
        raise ValueError(f"{base_url!r} has no host")
    _peers.add((service, url.hostname, url.port))


def _code(service: str) -> str:
    return service.replace("-", "_")


# What a 503 of ours tells the caller: a restarting service or database is usually back within a second.
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Answer:
    """What the next service answered: its status, its JSON object, and when to retry if it said so."""

    status: int
    body: dict[str, Any]
    retry_after_s: int | None = None


def retry_after(raw: str | None) -> int | None:
    """Retry-After in seconds; the HTTP-date form is not passed on (none of the services sends it)."""
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() else None


async def call_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    timeout_s: float,
    payload: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """Send one request and return its answer; 503/504/502 ApiErrors when that fails."""
    try:
        async with session.request(
            method,
            url,
            json=payload,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            status = response.status
            retry_after_s = retry_after(response.headers.get("Retry-After"))
            body = await response.json(content_type=None)
    except TimeoutError:
        log.warning("downstream timed out", extra={"peer.service": service, "timeout_s": timeout_s})
        raise ApiError(504, f"{_code(service)}_timeout", f"{service} did not answer within {timeout_s:g} s.") from None
    except aiohttp.ClientConnectionError as exc:
        log.warning("downstream unreachable", extra={"peer.service": service, "error": type(exc).__name__})
        raise ApiError(
            503, f"{_code(service)}_unavailable", f"{service} is unavailable.", retry_after_s=RETRY_AFTER_S
        ) from None
    except (aiohttp.ClientResponseError, json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        log.error("downstream answered without a JSON object", extra={"peer.service": service, "status": status})
        raise ApiError(502, f"{_code(service)}_bad_response", f"{service} gave an unreadable answer.")
    return Answer(status, body, retry_after_s)


async def probe_health(session: aiohttp.ClientSession, base_url: str) -> None:
    """A readiness check: the next service answers its liveness endpoint with 200."""
    async with session.get(f"{base_url}/healthz", timeout=aiohttp.ClientTimeout(total=0.5)) as response:
        if response.status != 200:
            raise RuntimeError(f"{base_url}/healthz answered {response.status}")
