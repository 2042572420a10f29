"""``make demo`` against the three services as real processes: every kind answered as documented, and
Grafana links that open the trace in Tempo and its logs in Loki, on provisioned data sources."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grafana_queries import datasources
from harness import ROOT
from harness.postgres import PostgresServer
from harness.processes import Shop, free_port, process_env, running_shop

pytestmark = pytest.mark.processes

DEMO = ROOT / "scripts" / "demo.py"
GRAFANA_URL = "http://grafana.example:3999/sub"
EXPECTED = {
    "paid": "201 paid",
    "declined": "402 payment_declined",
    "slow payment": "201 paid",
    "failing payment": "502 payment_failed",
    "slow database": "201 paid",
    "invalid input": "422 validation_failed",
}
ROW = re.compile(
    r"^(?P<kind>[a-z ]+?)\s{2,}(?P<got>\d{3} \S+)\s+(?P<expected>\d{3} \S+)\s+(?P<ms>\d+)\s+(?P<trace_id>\S+)"
)


def run_demo(gateway_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """As ``make demo`` runs it, but with no site-packages at all (-S): only the standard library, the
    harness and ``shop.grafana_links`` on PYTHONPATH, as on a bare python3."""
    return subprocess.run(
        [sys.executable, "-S", str(DEMO), *args],
        env=process_env(GATEWAY_URL=gateway_url, GRAFANA_URL=GRAFANA_URL, PYTHONPATH=f"{ROOT}:{ROOT / 'apps'}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Shop]:
    """As compose runs it: orders in PostgreSQL, so the slow-database order is slow (on SQLite it is refused)."""
    database = postgres_server.create_database("demo")
    with running_shop(
        tmp_path_factory.mktemp("demo"), GATEWAY_ALLOW_FAULT_HEADERS="true", ORDERS_DATABASE_URL=database
    ) as shop:
        yield shop


def explore_pane(link: str) -> dict[str, Any]:
    """The single pane of a Grafana Explore link, after checking the link's base and parameters."""
    assert link.startswith(f"{GRAFANA_URL}/explore?")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query, strict_parsing=True)
    assert params["schemaVersion"] == ["1"]
    assert params["orgId"] == ["1"]
    (pane,) = json.loads(params["panes"][0]).values()
    assert isinstance(pane, dict)
    return pane


def test_demo_places_every_kind_and_links_each_trace_and_its_logs(shop: Shop) -> None:
    result = run_demo(shop.gateway)
    print(result.stdout)  # the demo's own output, for whoever reads the test log

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    rows = {m["kind"]: (m, index) for index, line in enumerate(lines) if (m := ROW.match(line))}
    assert set(rows) == set(EXPECTED)
    provisioned = {source["uid"]: source["type"] for source in datasources()}

    for kind, expected in EXPECTED.items():
        row, index = rows[kind]
        assert row["got"] == expected == row["expected"]
        assert lines[index].rstrip().endswith("  ok")
        trace_id = row["trace_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id)

        tempo_line, loki_line = lines[index + 1].strip(), lines[index + 2].strip()
        assert tempo_line.startswith("trace in Tempo: ")
        assert loki_line.startswith("logs in Loki: ")
        tempo, loki = explore_pane(tempo_line.split()[-1]), explore_pane(loki_line.split()[-1])
        for pane, data_source_type in ((tempo, "tempo"), (loki, "loki")):
            (query,) = pane["queries"]
            assert provisioned[pane["datasource"]] == data_source_type
            assert query["datasource"] == {"type": data_source_type, "uid": pane["datasource"]}
            assert pane["range"] == {"from": "now-1h", "to": "now"}
        assert tempo["queries"][0]["query"] == trace_id
        assert tempo["queries"][0]["queryType"] == "traceql"
        assert loki["queries"][0]["expr"] == f'{{service_name=~".+"}} | trace_id="{trace_id}"'

    assert int(rows["slow payment"][0]["ms"]) >= 1500
    assert int(rows["slow database"][0]["ms"]) >= 1000
    assert "fault headers are disabled" not in result.stdout


@pytest.mark.parametrize(
    "env",
    [
        {"GATEWAY_ALLOW_FAULT_HEADERS": "false"},
        # Published beyond loopback (compose passes the address), the variable alone is not enough.
        {"GATEWAY_ALLOW_FAULT_HEADERS": "true", "PUBLIC_BIND_ADDRESS": "0.0.0.0"},
    ],
    ids=["off", "on-but-published-beyond-loopback"],
)
def test_demo_on_a_gateway_without_fault_headers_says_so_and_exits_1(tmp_path: Path, env: dict[str, str]) -> None:
    with running_shop(tmp_path, **env) as shop:
        result = run_demo(shop.gateway)
        logged = [line["message"] for line in shop.running["shop.gateway"].log_lines()]
    warned = [message for message in logged if message.startswith("fault headers are off")]
    assert len(warned) == (env["GATEWAY_ALLOW_FAULT_HEADERS"] == "true")

    assert result.returncode == 1, result.stdout + result.stderr
    rows = {m["kind"]: m for line in result.stdout.splitlines() if (m := ROW.match(line))}
    assert rows["slow payment"]["got"] == rows["failing payment"]["got"] == "201 paid"
    # Its fault header ignored too, the slow-database order is paid at once like the others.
    assert rows["slow database"]["got"] == "201 paid"
    assert result.stdout.count("fault headers are disabled on this gateway") == 3
    assert "not: slow payment, failing payment, slow database" in result.stdout


def test_demo_with_the_gateway_down_says_so_in_one_line_and_exits_2() -> None:
    gateway = f"http://127.0.0.1:{free_port()}"
    result = run_demo(f"http://127.0.0.1:{free_port()}", "--gateway", gateway)  # the flag wins over the env

    assert result.returncode == 2
    assert result.stdout == ""
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"demo: cannot reach the gateway at {gateway} (")
    assert error.endswith("start the stack: docker compose up -d (or make run)")


@pytest.mark.parametrize("forced", [False, True])
def test_demo_links_only_traces_that_were_kept(tmp_path: Path, forced: bool) -> None:
    """At a tiny sampling ratio the demo prints no link to a trace Tempo never got; where the operator
    allows forced sampling, the demo's own traceparent keeps every one of its traces."""
    env = {"TRACES_SAMPLE_RATIO": "0.000001", "GATEWAY_ALLOW_FORCED_SAMPLING": str(forced).lower()}
    with running_shop(tmp_path, GATEWAY_ALLOW_FAULT_HEADERS="true", **env) as shop:
        result = run_demo(shop.gateway)
    assert result.returncode == 0, result.stdout + result.stderr
    links = result.stdout.count("trace in Tempo:")
    not_kept = result.stdout.count("trace not kept")
    assert (links, not_kept) == ((6, 0) if forced else (0, 6)), result.stdout
    assert "the slow database needs PostgreSQL" in result.stdout, "running_shop is on SQLite"
