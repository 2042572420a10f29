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

# What Grafana puts in place of its variables, for running the queries outside Grafana. A dashboard
# variable becomes its "All" value (all_values() reads those from the dashboards).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    # Trace links, for a span of payment-service's server (``$__tags`` comes from each link's tags: span_tags()):
    "${__span.name}": "POST /payments",
    "${__span.spanId}": "00f067aa0ba902b7",
    "${__trace.traceId}": "4bf92f3577b34da6a3ce929d0e0e4736",
}
EXAMPLE_SPAN_ATTRIBUTES = {"service.name": "payment-service"}


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


def all_values() -> dict[str, str]:
    """``$name`` -> the value Grafana substitutes when the dashboard variable ``name`` is set to All."""
    found: dict[str, str] = {}
    for name, board in dashboards().items():
        for variable in board.get("templating", {}).get("list", []):
            if not variable.get("includeAll"):
                continue
            assert variable.get("allValue"), f"{name}: variable {variable['name']} has no explicit allValue"
            assert found.setdefault(f"${variable['name']}", variable["allValue"]) == variable["allValue"], (
                f"variable {variable['name']} has different All values across dashboards"
            )
    return found


def span_tags(link: dict[str, Any]) -> str:
    """``$__tags`` of a Tempo trace link for the example span: ``label="value"`` for each configured tag the
    span has, as Grafana writes it (the tag's ``value`` is the label name it maps to)."""
    tags = [tag for tag in link.get("tags", []) if tag["key"] in EXAMPLE_SPAN_ATTRIBUTES]
    return ", ".join(f'{tag.get("value") or tag["key"]}="{EXAMPLE_SPAN_ATTRIBUTES[tag["key"]]}"' for tag in tags)


def substitute(expr: str, extra: dict[str, str] | None = None) -> str:
    """Grafana's variables replaced by test values; ``$$`` in provisioning files is a literal ``$``."""
    expr = expr.replace("$$", "$")
    variables = {**GRAFANA_VARIABLES, **all_values(), **(extra or {})}
    for variable, value in sorted(variables.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    leftover = re.search(r"\$\{?[A-Za-z_]", expr)
    assert leftover is None, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def link_variables(link: dict[str, Any]) -> dict[str, str]:
    tags = span_tags(link)
    return {"${__tags}": tags, "$__tags": tags}


def dashboard_targets(datasource_uid: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, target) for every dashboard query that goes to the given data source."""
    for name, board in dashboards().items():
        for panel in walk(board.get("panels", [])):
            for target in panel.get("targets", []):
                uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
                if uid == datasource_uid:
                    yield f"{name}: {panel['title']} {target['refId']}", target


def promql_expressions() -> dict[str, str]:
    """name -> runnable PromQL, for every Prometheus query in dashboards and data-source links."""
    found = {name: substitute(target["expr"]) for name, target in dashboard_targets("prometheus")}
    for name, board in dashboards().items():
        for variable in board.get("templating", {}).get("list", []):
            match = re.fullmatch(r"label_values\((.+), \w+\)", variable.get("query", ""))
            if match:
                found[f"{name}: variable {variable['name']}"] = match.group(1)
    for source in datasources():
        link = source.get("jsonData", {}).get("tracesToMetrics", {})
        for query in link.get("queries", []):
            found[f"datasource {source['uid']}: {query['name']}"] = substitute(query["query"], link_variables(link))
    return found


def logql_expressions() -> dict[str, str]:
    """name -> LogQL as Grafana sends it, every variable at All: dashboard targets and the trace -> logs link."""
    found = {name: substitute(target["expr"]) for name, target in dashboard_targets("loki")}
    for source in datasources():
        link = source.get("jsonData", {}).get("tracesToLogsV2", {})
        if link.get("customQuery"):
            found[f"datasource {source['uid']}: tracesToLogsV2"] = substitute(link["query"], link_variables(link))
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
