"""The shop page as the gateway serves it, in process: the form without a built bundle, the page's settings,
its files, and the ``tracestate`` answer the page follows. The page in a real browser: tests/test_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import StackFactory
from harness import ROOT
from shop.gateway.browser_traces import RateLimit
from shop.gateway.page import STATIC_FILES, TRACE_ID_MARK
from shop.grafana_links import tempo_link
from shop.sampling import encode_threshold, threshold

pytestmark = pytest.mark.inprocess

PAGE = ROOT / "apps" / "web" / "page"


def page_config(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="shop-config">(.*?)</script>', html, re.S)
    assert found, html[:500]
    loaded: dict[str, object] = json.loads(found.group(1))
    return loaded


@pytest.fixture
def web_root_without_bundle(tmp_path: Path) -> Path:
    shutil.copytree(PAGE, tmp_path / "page")
    return tmp_path


async def test_without_a_bundle_the_page_serves_the_form_and_says_how_to_build_it(
    start_stack: StackFactory, web_root_without_bundle: Path
) -> None:
    stack = await start_stack(gateway={"web_root": web_root_without_bundle})
    response = await stack.gateway.get("/")
    html = await response.text()
    assert response.status == 200
    assert response.content_type == "text/html"
    assert '<form id="order" method="post" action="/api/order"' in html
    assert "make web" in html
    assert "/static/tracing.js" not in html
    assert (await stack.gateway.get("/static/tracing.js")).status == 404
    # ... and orders work all the same.
    status, _ = await stack.place_order()
    assert status == 201


async def test_the_page_carries_grafanas_links_and_the_fault_orders_only_where_honoured(
    start_stack: StackFactory,
) -> None:
    shared = await start_stack(gateway={"grafana_public_url": "http://grafana.example:3000"})
    config = page_config(await (await shared.gateway.get("/")).text())
    assert config["traceLink"] == tempo_link("http://grafana.example:3000", TRACE_ID_MARK)
    assert config["faults"] == []
    local = await start_stack(gateway={"allow_fault_headers": True})
    faults = page_config(await (await local.gateway.get("/")).text())["faults"]
    assert isinstance(faults, list)
    assert [fault["value"] for fault in faults] == ["slow-payment", "failing-payment", "slow-database"]


async def test_only_the_pages_own_files_are_served(start_stack: StackFactory) -> None:
    stack = await start_stack()
    for name in ("shop.js", "shop.css"):
        response = await stack.gateway.get(f"/static/{name}")
        assert response.status == 200, name
        assert response.content_type == STATIC_FILES[name][1]
    for path in ("/static/index.html", "/static/..%2Fpackage.json", "/static/package-lock.json"):
        response = await stack.gateway.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"


async def test_every_answer_tells_the_page_the_gateways_threshold(start_stack: StackFactory) -> None:
    stack = await start_stack()
    response = await stack.gateway.post("/api/order", json={"item": "book"})  # a 422 is answered all the same
    assert response.status == 422
    assert re.fullmatch(
        rf"ot=th:{encode_threshold(threshold(1.0))}(;rv:[0-9a-f]{{14}})?", response.headers["tracestate"]
    )
    exposed = {name.strip() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"traceresponse", "tracestate"}


def test_the_rate_limit_allows_ten_seconds_worth_at_once_then_the_rate() -> None:
    limit = RateLimit(per_minute=60)
    assert [limit.wait_s("a", now=100.0) for _ in range(10)] == [0.0] * 10
    assert limit.wait_s("a", now=100.0) == pytest.approx(1.0)
    assert limit.wait_s("b", now=100.0) == 0.0  # per client address
    assert limit.wait_s("a", now=101.0) == 0.0  # one a second again
    assert limit.wait_s("a", now=101.5) == pytest.approx(0.5)
