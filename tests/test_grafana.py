"""The pivots as Grafana really reads them, checked in the generated dashboards and the provisioning.

Grafana cannot run here, so each check restates what Grafana's own source does with a setting and names
that code; the PromQL itself runs against a real Prometheus in test_stack.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from grafana_queries import all_values, dashboards, datasources, logql_expressions, walk

pytestmark = pytest.mark.unit

# Grafana's rangeUtil.intervalToMs: a signed number and a unit (packages/grafana-data/src/datetime/rangeutil.ts).
INTERVAL = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# A LogQL label matcher; values are Go strings in double quotes or raw strings in backticks.
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)\s*')


def interval_ms(value: str) -> int:
    match = INTERVAL.match(value)
    assert match, f"Grafana cannot parse the interval {value!r}"
    return int(float(match.group(1)) * UNIT_MS[match.group(2)])


def tempo() -> dict[str, Any]:
    [source] = [source for source in datasources() if source["type"] == "tempo"]
    json_data: dict[str, Any] = source["jsonData"]
    return json_data


def test_trace_by_id_window_widens_on_both_sides() -> None:
    # makeTraceIdRequest: from.subtract(spanStartTimeShift || '30m'), to.add(spanEndTimeShift || '30m').
    # A negative start shift would move the start later and miss an older trace in the picked range.
    query = tempo()["traceQuery"]
    if query.get("timeShiftEnabled"):
        assert interval_ms(query.get("spanStartTimeShift") or "30m") >= 0
        assert interval_ms(query.get("spanEndTimeShift") or "30m") >= 0


@pytest.mark.parametrize("link", ["tracesToLogsV2", "tracesToMetrics"])
def test_span_link_windows_widen_on_both_sides(link: str) -> None:
    # getTimeRangeFromSpan: span start + startMs, span end + endMs: here a widening start shift is negative.
    options = tempo()[link]
    assert interval_ms(options.get("spanStartTimeShift") or "0s") <= 0
    assert interval_ms(options.get("spanEndTimeShift") or "0s") >= 0


def test_tempo_has_no_loki_search_setting() -> None:
    # Grafana 11 removed the Loki search tab (grafana/grafana#84346): nothing reads lokiSearch.
    assert "lokiSearch" not in tempo()


def test_every_logs_panel_opens_log_details() -> None:
    # Loki's derived field (log line -> trace) is a link inside log details; with enableLogDetails false a
    # click on a line does nothing (LogDetailsContext.toggleDetails returns early).
    logs_panels = [
        (name, panel) for name, board in dashboards().items() for panel in walk(board) if panel.get("type") == "logs"
    ]
    assert logs_panels
    for name, panel in logs_panels:
        assert (panel.get("options") or {}).get("enableLogDetails", True) is True, f"{name}: {panel['title']}"


def test_every_panel_has_a_unique_id() -> None:
    for name, board in dashboards().items():
        panels = list(board["panels"])
        panels += [inner for panel in board["panels"] for inner in panel.get("panels", [])]
        ids = [panel.get("id") for panel in panels]
        assert all(isinstance(number, int) and number > 0 for number in ids), f"{name}: {ids}"
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids {ids}"


def stream_selectors(logql: str) -> list[str]:
    """The ``{...}`` stream selectors of a LogQL query (braces inside quoted strings skipped)."""
    selectors: list[str] = []
    start: int | None = None
    quote: str | None = None
    escaped = False
    for index, char in enumerate(logql):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = None
        elif char in '"`':
            quote = char
        elif char == "{" and start is None:
            start = index
        elif char == "}" and start is not None:
            selectors.append(logql[start + 1 : index])
            start = None
    return selectors


def matchers(selector: str) -> list[tuple[str, str, str]]:
    """(label, operator, value) of each matcher in a stream selector's body."""
    found: list[tuple[str, str, str]] = []
    if not selector.strip():
        return found  # {}: Loki refuses it too
    for part in re.split(r",(?=(?:[^\"`]|\"(?:[^\"\\]|\\.)*\"|`[^`]*`)*$)", selector):
        match = MATCHER.fullmatch(part)
        assert match, f"not a label matcher: {part!r} in {{{selector}}}"
        quoted, raw = match.group(3), match.group(4)
        value = raw if raw is not None else re.sub(r"\\(.)", r"\1", quoted)
        found.append((match.group(1), match.group(2), value))
    return found


def cannot_match_empty(operator: str, value: str) -> bool:
    """Whether a matcher rejects the empty value, i.e. Prometheus's ``labels.Matcher.Matches("")`` is false:
    Loki keeps only such matchers to select streams (util.SplitFiltersAndMatchers) and refuses a selector
    left without one. Loki anchors regexes and uses RE2; Python's re.fullmatch stands in for it here."""
    matches_empty = {
        "=": value == "",
        "!=": value != "",
        "=~": re.fullmatch(value, "") is not None,
        "!~": re.fullmatch(value, "") is None,
    }[operator]
    return not matches_empty


def test_every_loki_stream_selector_keeps_a_matcher_that_cannot_match_empty_with_variables_at_all() -> None:
    # Loki 3.7.6 refuses {service_name=~".*"}: "queries require at least one regexp or equality matcher that
    # does not have an empty-compatible value".
    assert all_values(), "no dashboard variable offers All"
    queries = logql_expressions()
    assert any(name.endswith("tracesToLogsV2") for name in queries)
    for name, logql in queries.items():
        selectors = stream_selectors(logql)
        assert selectors, f"{name}: no stream selector in {logql!r}"
        for selector in selectors:
            assert any(cannot_match_empty(operator, value) for _, operator, value in matchers(selector)), (
                f"{name}: Loki refuses {{{selector}}} (every matcher can match the empty string)"
            )


@pytest.mark.parametrize(
    ("logql", "accepted"),
    [
        ('{service_name=~".+"}', True),
        ('{service_name=~".*"}', False),
        ('{service_name=""}', False),
        ('{service_name=~".*", job="shop"} | trace_id="1"', True),
        ('{service_name!="x"}', False),
        ('{service_name!=""}', True),
        ('{service_name!~"a|b"}', False),
        ("{service_name=~`(a|b)`}", True),
        ("{}", False),
    ],
)
def test_the_empty_matcher_check_agrees_with_loki(logql: str, accepted: bool) -> None:
    [selector] = stream_selectors(logql)
    assert any(cannot_match_empty(operator, value) for _, operator, value in matchers(selector)) is accepted
