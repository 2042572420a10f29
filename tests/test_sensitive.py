"""No full card number anywhere: spans, logs, metrics, /metrics, the database."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Capture, StackFactory
from harness.database import SQLITE_PREFIX, query
from harness.orders import DECLINED_CARD, FAIL_HEADER, GOOD_CARD, order_body

pytestmark = pytest.mark.inprocess

BAD_LUHN_CARD = "4242424242424241"
CARDS = (GOOD_CARD, DECLINED_CARD, BAD_LUHN_CARD)


def telemetry_text(capture: Capture) -> str:
    """Everything the in-memory exporters hold, as one string to search."""
    parts: list[str] = []
    for span in capture.spans():
        parts.append(span.to_json())
    for record in capture.logs():
        parts.append(record.to_json())
    collected = capture.metrics_data()
    assert collected, "this test's metrics were collected"
    parts.extend(data.to_json() for data in collected)
    return "\n".join(parts)


def database_bytes(database_url: str) -> bytes:
    """What the database holds: SQLite's file and its write-ahead log (where recent rows live until a
    checkpoint, and rows overwritten since); PostgreSQL's rows, every version a query can see."""
    if database_url.startswith(SQLITE_PREFIX):
        path = Path(database_url.removeprefix(SQLITE_PREFIX))
        return b"".join(file.read_bytes() for file in sorted(path.parent.glob(f"{path.name}*")))
    return "\n".join(str(row) for row in query(database_url, "SELECT * FROM orders")).encode()


async def test_card_numbers_never_leave_the_request(
    start_stack: StackFactory, capture: Capture, database_url: str
) -> None:
    stack = await start_stack(gateway={"allow_fault_headers": True})
    await stack.place_order(order_body(card_number=GOOD_CARD), **{"Idempotency-Key": "k"})
    await stack.place_order(order_body(card_number=GOOD_CARD), **{"Idempotency-Key": "k"})
    await stack.place_order(order_body(card_number=DECLINED_CARD))
    await stack.place_order(order_body(card_number=GOOD_CARD), **{FAIL_HEADER: "true"})
    await stack.place_order(order_body(card_number=BAD_LUHN_CARD))
    assert len(capture.spans()) > 20

    scraped = []
    for url in (stack.orders.url if stack.orders else "", stack.payments.url if stack.payments else ""):
        async with stack.gateway.session.get(f"{url}/metrics") as response:
            scraped.append(await response.text())
    scraped.append(await (await stack.gateway.get("/metrics")).text())
    stored = database_bytes(database_url)
    assert stored, "the database files exist"

    haystacks = {
        "telemetry": telemetry_text(capture),
        "/metrics": "\n".join(scraped),
        "database": stored.decode("latin-1"),
    }
    for where, text in haystacks.items():
        for card in CARDS:
            assert card not in text, f"full card number in {where}"
    assert "4242" in haystacks["database"], "the last four digits are kept"
