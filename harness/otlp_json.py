"""OTLP/JSON trace bodies, as the browser's exporter sends them: for posting to the gateway's
``/otlp/v1/traces`` without a browser (hostile bodies, and the stack test's page spans). Standard library only."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2


def attributes(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"stringValue": value}} for key, value in values.items()]


def json_span(
    trace_id: str,
    name: str,
    *,
    kind: int = SPAN_KIND_INTERNAL,
    trace_state: str = "",
    duration_ms: float = 5,
    span_attributes: Mapping[str, str] | None = None,
    events: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One span that ended just now."""
    now = time.time_ns()
    return {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(now - int(duration_ms * 1e6)),
        "endTimeUnixNano": str(now),
        "traceState": trace_state,
        "attributes": attributes(span_attributes or {}),
        "events": list(events),
    }


def traces_document(resource: Mapping[str, str], spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": attributes(resource)}, "scopeSpans": [{"spans": spans}]}]}


def traces_body(resource: Mapping[str, str], spans: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps(traces_document(resource, spans)).encode()
