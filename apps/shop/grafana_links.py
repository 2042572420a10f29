"""Grafana Explore links to one trace in Tempo and to its logs in Loki: what ``make demo`` prints and what
the shop page links to. Standard library only: ``make demo`` imports it under a bare ``python3``."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

# Fixed in grafana/provisioning/datasources/datasources.yaml.
TEMPO = {"type": "tempo", "uid": "tempo"}
LOKI = {"type": "loki", "uid": "loki"}
# Grafana keeps an Explore pane ID only if it is 3 characters with a letter; others it replaces.
PANE_ID = "dmo"
EXPLORE_RANGE = {"from": "now-1h", "to": "now"}


def explore_url(grafana_url: str, datasource: dict[str, str], query: dict[str, Any]) -> str:
    """A Grafana (11 to 13) Explore link with one pane running one query over the last hour."""
    pane = {
        "datasource": datasource["uid"],
        "queries": [{"refId": "A", "datasource": datasource, **query}],
        "range": EXPLORE_RANGE,
    }
    params = {"schemaVersion": "1", "orgId": "1", "panes": json.dumps({PANE_ID: pane}, separators=(",", ":"))}
    return f"{grafana_url}/explore?{urllib.parse.urlencode(params, quote_via=urllib.parse.quote)}"


def tempo_link(grafana_url: str, trace_id: str) -> str:
    return explore_url(grafana_url, TEMPO, {"queryType": "traceql", "query": trace_id})


def loki_link(grafana_url: str, trace_id: str) -> str:
    # Loki keeps trace_id as structured metadata, not as a stream label: a label filter after the selector.
    # Every stream with a service name, so that renamed services or namespaces still match.
    expr = f'{{service_name=~".+"}} | trace_id="{trace_id}"'
    return explore_url(grafana_url, LOKI, {"expr": expr, "queryType": "range", "editorMode": "code"})
