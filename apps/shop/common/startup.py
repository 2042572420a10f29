"""The one start-up step that changes process-wide state.

``run_service`` calls it first, before any application is built; the in-process tests call it
once per session, so they run what production runs. The factories (``new_application``,
``new_registry``, ``configure_telemetry``'s callers) change nothing outside what they return.
"""

from __future__ import annotations

import logging
import os

# The one change that cannot wait for prepare_process: the SDK builds a Resource as it is imported
# (a dataclass default in opentelemetry.sdk._logs), before any logging is set up, so Python's
# last-resort handler would print a complaint about OTEL_RESOURCE_ATTRIBUTES raw on stderr, ahead
# of the one line that start-up ends with. This module comes before the SDK in every service's
# imports (``__main__`` -> runner -> here); the SDK's later warnings still reach the root logger.
logging.getLogger("opentelemetry").addHandler(logging.NullHandler())

from prometheus_client import disable_created_metrics  # noqa: E402

from shop.common.parser_errors import install_json_parser_errors  # noqa: E402
from shop.common.propagation import install_text_only_propagation  # noqa: E402
from shop.settings import TelemetrySettings  # noqa: E402
from shop.telemetry import OTEL_ENV_DEFAULTS, Telemetry, TelemetryExporters, configure_telemetry  # noqa: E402


def prepare_process(settings: TelemetrySettings, exporters: TelemetryExporters | None = None) -> Telemetry:
    """Make every process-wide change, once; raises SettingsError when the SDK refuses an OTEL_* value.

    - ``OTEL_ENV_DEFAULTS`` into ``os.environ``, where the operator set nothing: the SDK and the
      instrumentations read those variables only from there.
    - JSON answers for the errors aiohttp's HTTP parser sends itself (a class attribute of aiohttp).
    - The global propagator ignores header values that are not text (a 500 otherwise; see
      ``shop.common.propagation``).
    - No ``*_created`` series from prometheus-client: they would double every counter for no use
      here (a module-wide switch).
    - Telemetry: the global tracer, meter and logger providers, root logging, and the aiohttp
      instrumentors, which replace ``web.Application`` and patch ``ClientSession``.
    """
    for name, value in OTEL_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    install_json_parser_errors()
    install_text_only_propagation()
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    return configure_telemetry(settings, exporters)
