"""``make demo``: one order of each kind through the gateway, and where to see each one in Grafana.

Places a paid, a declined, a slow-payment, a failing-payment and an invalid order, then prints a
table: what each got back against what docs/api.md documents, the latency, the trace ID, and two
Grafana Explore links per order, one to its trace in Tempo and one to its logs in Loki. Exits 1 if
any order was not answered as documented, 2 if the gateway cannot be reached.

The gateway and Grafana addresses come from GATEWAY_URL and GRAFANA_URL (defaults: the compose
ports on localhost), or from --gateway and --grafana. Standard library only, with the harness's
standard-library modules and shop.grafana_links on PYTHONPATH (``make demo`` sets it): a bare ``python3`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.compose import PUBLISHED_PORTS
from harness.orders import DB_DELAY_HEADER, DECLINED_CARD, DELAY_HEADER, FAIL_HEADER, order_body
from shop.grafana_links import loki_link, tempo_link

DEFAULT_GATEWAY_URL = f"http://localhost:{PUBLISHED_PORTS['gateway']}"
DEFAULT_GRAFANA_URL = f"http://localhost:{PUBLISHED_PORTS['grafana']}"
TIMEOUT_S = 10.0
SLOW_PAYMENT_MS = 1500
SLOW_DATABASE_MS = 1000
# What order-service on SQLite (make run) answers the slow-database fault: it needs PostgreSQL (compose).
NEEDS_POSTGRESQL = (422, "fault_not_supported")
TRACE_ID = re.compile(r"[0-9a-f]{32}")


def order(**overrides: Any) -> dict[str, Any]:
    return order_body(**{"quantity": 1, "customer_id": "demo", **overrides})


@dataclass(frozen=True)
class Kind:
    """One kind of order and its documented answer: HTTP status and outcome (order status or error.code)."""

    name: str
    body: dict[str, Any]
    status: int
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)
    min_latency_ms: float = 0.0

    @property
    def expected(self) -> str:
        return f"{self.status} {self.outcome}"


KINDS = (
    Kind("paid", order(), 201, "paid"),
    Kind("declined", order(card_number=DECLINED_CARD), 402, "payment_declined"),
    Kind(
        "slow payment",
        order(),
        201,
        "paid",
        headers={DELAY_HEADER: str(SLOW_PAYMENT_MS)},
        min_latency_ms=SLOW_PAYMENT_MS,
    ),
    Kind("failing payment", order(), 502, "payment_failed", headers={FAIL_HEADER: "true"}),
    Kind(
        "slow database",
        order(),
        201,
        "paid",
        headers={DB_DELAY_HEADER: str(SLOW_DATABASE_MS)},
        min_latency_ms=SLOW_DATABASE_MS,
    ),
    Kind("invalid input", order(quantity=0, card_number="1234"), 422, "validation_failed"),
)


class GatewayUnreachable(Exception):
    """No HTTP answer at all: refused, unknown host, timed out."""


@dataclass(frozen=True)
class Answer:
    kind: Kind
    status: int
    latency_ms: float
    body: Any

    @property
    def outcome(self) -> str:
        if not isinstance(self.body, dict):
            return "(not JSON)"
        error = self.body.get("error")
        if isinstance(error, dict):
            return str(error.get("code", "?"))
        return str(self.body.get("status", "?"))

    @property
    def trace_id(self) -> str | None:
        value = self.body.get("trace_id") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) and TRACE_ID.fullmatch(value) else None

    @property
    def trace_kept(self) -> bool:
        """Whether the gateway says the trace was kept (sampled): only then does Tempo have it."""
        return isinstance(self.body, dict) and self.body.get("trace_sampled") is True

    @property
    def fault_headers_ignored(self) -> bool:
        """A fault was asked for, yet the order was paid at once: the gateway does not honour fault headers."""
        paid_at_once = (self.status, self.outcome) == (201, "paid") and (
            self.kind.expected != "201 paid" or self.latency_ms < self.kind.min_latency_ms
        )
        return bool(self.kind.headers) and paid_at_once

    @property
    def needs_postgresql(self) -> bool:
        """The slow-database order refused by order-service on SQLite, as documented for it."""
        return DB_DELAY_HEADER in self.kind.headers and (self.status, self.outcome) == NEEDS_POSTGRESQL

    @property
    def as_documented(self) -> bool:
        return self.needs_postgresql or (
            self.status == self.kind.status
            and self.outcome == self.kind.outcome
            and self.latency_ms >= self.kind.min_latency_ms
            and self.trace_id is not None
        )


def check_reachable(gateway_url: str) -> None:
    """Any HTTP answer from the gateway's /healthz will do; no answer at all raises GatewayUnreachable."""
    try:
        with urllib.request.urlopen(f"{gateway_url}/healthz", timeout=TIMEOUT_S):  # noqa: S310 (checked http(s))
            pass
    except urllib.error.HTTPError:
        pass
    except OSError as error:  # URLError, refused, timed out, reset
        raise GatewayUnreachable(str(getattr(error, "reason", error))) from error


def sampled_traceparent() -> str:
    """A new trace that asks to be kept: honoured only where GATEWAY_ALLOW_FORCED_SAMPLING=true, and
    then counted exactly once; otherwise the gateway decides as for any caller."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def place(gateway_url: str, kind: Kind) -> Answer:
    request = urllib.request.Request(  # noqa: S310 (the operator's URL, checked to be http(s))
        f"{gateway_url}/api/order",
        data=json.dumps(kind.body).encode(),
        headers={"Content-Type": "application/json", "traceparent": sampled_traceparent(), **kind.headers},
        method="POST",
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError as error:  # URLError, refused, timed out, reset
        raise GatewayUnreachable(str(getattr(error, "reason", error))) from error
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        body: Any = json.loads(raw)
    except json.JSONDecodeError:
        body = raw.decode(errors="replace")
    return Answer(kind, status, latency_ms, body)


def progress_line(index: int, kind: Kind) -> str:
    extra = "".join(f", {name}: {value}" for name, value in kind.headers.items())
    wait = f" (about {kind.min_latency_ms / 1000:g} s)" if kind.min_latency_ms else ""
    return f"[{index}/{len(KINDS)}] placing the {kind.name} order{extra}{wait}"


def print_table(answers: Sequence[Answer], grafana_url: str) -> None:
    rows = [
        (
            a.kind.name,
            f"{a.status} {a.outcome}",
            a.kind.expected,
            f"{a.latency_ms:.0f}",
            a.trace_id or "(none)",
            "ok" if a.as_documented else "FAIL",
        )
        for a in answers
    ]
    header = ("kind", "got", "expected", "ms", "trace_id", "check")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    right_aligned = {3}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print()
    print(line(header))
    print(line(["-" * width for width in widths]))
    for answer, row in zip(answers, rows, strict=True):
        print(line(row))
        if answer.trace_id is None:
            print("    no trace_id in the answer: nothing to link to")
        elif not answer.trace_kept:
            print("    trace not kept (TRACES_SAMPLE_RATIO below 1): no link to a trace Tempo does not have")
        else:
            print(f"    trace in Tempo: {tempo_link(grafana_url, answer.trace_id)}")
            print(f"    logs in Loki:   {loki_link(grafana_url, answer.trace_id)}")
        if answer.needs_postgresql:
            print(
                "    note: order-service runs on SQLite here; the slow database needs PostgreSQL (docker compose up -d)"
            )
        if answer.fault_headers_ignored:
            print(
                f"    note: {', '.join(answer.kind.headers)} had no effect (answered in {answer.latency_ms:.0f} ms); "
                "fault headers are disabled on this gateway (start it with GATEWAY_ALLOW_FAULT_HEADERS=true, "
                "on loopback: docs/configuration.md#fault-headers-and-edge-trust)"
            )


def http_url(value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {value!r}")
    return value.rstrip("/")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--gateway",
        type=http_url,
        default=os.environ.get("GATEWAY_URL") or DEFAULT_GATEWAY_URL,
        help=f"the gateway's base URL (env GATEWAY_URL, default {DEFAULT_GATEWAY_URL})",
    )
    parser.add_argument(
        "--grafana",
        type=http_url,
        default=os.environ.get("GRAFANA_URL") or DEFAULT_GRAFANA_URL,
        help=f"Grafana's base URL for the links (env GRAFANA_URL, default {DEFAULT_GRAFANA_URL})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    answers: list[Answer] = []
    try:
        check_reachable(args.gateway)
        print(f"One order of each kind through {args.gateway}", flush=True)
        for index, kind in enumerate(KINDS, start=1):
            print(progress_line(index, kind), flush=True)
            answers.append(place(args.gateway, kind))
    except GatewayUnreachable as error:
        print(
            f"demo: cannot reach the gateway at {args.gateway} ({error}); start the stack: docker compose up -d "
            "(or make run)",
            file=sys.stderr,
        )
        return 2
    print_table(answers, args.grafana)
    missed = [a.kind.name for a in answers if not a.as_documented]
    print()
    if missed:
        print(f"{len(answers) - len(missed)} of {len(answers)} answered as documented; not: {', '.join(missed)}")
        return 1
    print(f"All {len(answers)} answered as documented. Telemetry is batched: give Tempo and Loki a few seconds.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
