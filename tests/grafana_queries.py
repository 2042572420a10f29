"""Every PromQL expression Grafana will run: dashboard targets and the Tempo data source's metric links."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from harness import ROOT

DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARDS = ROOT / "grafana" / "dashboards"

# What Grafana puts in place of its variables, for running the queries outside Grafana.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$service": ".*",
    # tracesToMetrics, for a span of payment-service's server:
    "$__tags": 'service_name="payment-service"',
    "${__span.name}": "POST /payments",
}


def datasources() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return loaded


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside a JSON document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def substitute(expr: str) -> str:
    """Grafana's variables replaced by test values; ``$$`` in provisioning files is a literal ``$``."""
    expr = expr.replace("$$", "$")
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    leftover = re.search(r"\$\{?[A-Za-z_]", expr)
    assert leftover is None, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def promql_expressions() -> dict[str, str]:
    """name -> runnable PromQL, for every Prometheus query in dashboards and data-source links."""
    found: dict[str, str] = {}
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") == "prometheus":
                    found[f"{name}: {panel['title']} {target['refId']}"] = substitute(target["expr"])
        for variable in board.get("templating", {}).get("list", []):
            match = re.fullmatch(r"label_values\((.+), \w+\)", variable.get("query", ""))
            if match:
                found[f"{name}: variable {variable['name']}"] = match.group(1)
    for source in datasources():
        for query in source.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            found[f"datasource {source['uid']}: {query['name']}"] = substitute(query["query"])
    return found


def referenced_datasource_uids() -> set[str]:
    """Every data-source UID that a data source or a dashboard points at."""
    uids: set[str] = set()
    for source in datasources():
        for node in walk(source.get("jsonData", {})):
            if "datasourceUid" in node:
                uids.add(node["datasourceUid"])
    for board in dashboards().values():
        for node in walk(board):
            datasource = node.get("datasource")
            if isinstance(datasource, dict) and "uid" in datasource:
                uids.add(datasource["uid"])
    return uids
