"""Running one service as a process: settings, telemetry, the event loop, a clean exit."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

import uvloop
from aiohttp import web

from shop.common.startup import prepare_process
from shop.settings import ServerSettings, SettingsError, TelemetrySettings

# In-flight requests get this long to finish after SIGTERM/SIGINT.
GRACEFUL_SHUTDOWN_S = 5.0

SettingsT = TypeVar("SettingsT")


def load_settings(from_env: Callable[[], SettingsT]) -> SettingsT:
    """Settings from the environment, or a one-line error and exit status 2."""
    try:
        return from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_service(
    server: ServerSettings,
    telemetry_settings: TelemetrySettings,
    create_app: Callable[[], web.Application],
) -> None:
    """Prepare the process first (telemetry must precede the app), serve until a signal, then flush."""
    try:
        telemetry = prepare_process(telemetry_settings)
    except ValueError as exc:  # SettingsError, or a ValueError the SDK raised elsewhere
        # The SDK reads and checks the OTEL_* variables it knows (resource, batching, ...) itself.
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log = logging.getLogger("shop.runner")
    log.info("starting", extra={"host": server.host, "port": server.port, "telemetry": telemetry.enabled})
    app = create_app()
    # Process-wide too, but it belongs here, after the app is built: everything allocated so far
    # lives as long as the process, so keep it out of the collector's full passes, which
    # otherwise walk it all and stall requests (docs/performance.md).
    gc.freeze()
    try:
        web.run_app(
            app,
            host=server.host,
            port=server.port,
            reuse_port=server.reuse_port,
            access_log=None,  # the server span records every request already
            print=None,
            shutdown_timeout=GRACEFUL_SHUTDOWN_S,
            loop=uvloop.new_event_loop(),
        )
    finally:
        log.info("stopped")
        telemetry.shutdown()
