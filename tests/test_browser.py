"""The shop page in a real browser: Debian's headless chromium, driven by Selenium through Debian's chromedriver,
against the services as processes and the built Collector (a recording stand-in for Tempo behind it).

The trace starts at the click: the click span is the root, the fetch span its child, the gateway's server span
the fetch span's child. The page exports its spans only for traces the gateway kept, each with the gateway's
``ot`` entry. What the public ingest (``POST /otlp/v1/traces``) refuses, and what a forged body can no longer
claim, is tested with plain requests against the same Collector.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import os
import shutil
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from harness import ROOT
from harness.backends import Collector, collector_with_stand_ins
from harness.orders import DECLINED_CARD, GOOD_CARD, order_body
from harness.otlp_json import SPAN_KIND_SERVER, attributes, json_span, traces_body
from harness.otlp_sink import OtlpSink
from harness.processes import Shop, free_port, start_service
from tools import collector_binary, require

pytestmark = pytest.mark.backends

BUNDLE = ROOT / "apps" / "web" / "dist" / "tracing.js"
ARTIFACTS = ROOT / "build" / "artifacts"
PAGE_SERVICE = "shop-web"
CLICKS = 400
P = 0.25


def chromium() -> tuple[str, str]:
    """Debian's chromium and its chromedriver (given by path, so Selenium never tries to download one)."""
    browser = require(shutil.which("chromium"), "no chromium: `apt-get install chromium chromium-driver`")
    driver = require(shutil.which("chromedriver"), "no chromedriver: `apt-get install chromium-driver`")
    return browser, driver


def bundle() -> Path:
    require(str(BUNDLE) if BUNDLE.is_file() else None, "no tracing bundle: run `make web` (needs npm)")
    return BUNDLE


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--disable-dev-shm-usage", "--window-size=900,1400"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to run as root with its sandbox
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(300)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class TracedShop:
    shop: Shop
    collector: Collector
    tempo: OtlpSink

    @property
    def gateway(self) -> str:
        return self.shop.gateway


@contextmanager
def traced_shop(workdir: Path, **env: str) -> Iterator[TracedShop]:
    collector_binary()
    bundle()
    with collector_with_stand_ins(workdir) as (collector, tempo, _):
        shop = Shop(
            workdir / "shop",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_endpoint,
            BROWSER_OTLP_ENDPOINT=collector.browser_otlp_endpoint,
            PAYMENTS_LATENCY_MIN_MS="0",
            PAYMENTS_LATENCY_MAX_MS="2",
            OTEL_METRIC_EXPORT_INTERVAL="1000",
            **env,
        )
        try:
            shop.start_all()
            yield TracedShop(shop, collector, tempo)
        finally:
            shop.kill_all()


@pytest.fixture(scope="module")
def kept_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedShop]:
    with traced_shop(tmp_path_factory.mktemp("browser"), GATEWAY_ALLOW_FAULT_HEADERS="true") as shop:
        yield shop


def open_page(browser: WebDriver, gateway: str) -> None:
    browser.get(f"{gateway}/")
    WebDriverWait(browser, 10).until(lambda driver: driver.execute_script("return !!window.shopTracing"))


def fill(browser: WebDriver, **fields: str) -> None:
    for name, value in fields.items():
        element = browser.find_element(By.ID, name)
        element.clear()
        element.send_keys(value)


def buy(browser: WebDriver) -> dict[str, str]:
    """Click Buy and wait for the answer; its rows (HTTP status, Order, Status, Total, Trace) by name."""
    browser.execute_script("document.getElementById('answer').hidden = true")
    browser.find_element(By.ID, "buy").click()
    WebDriverWait(browser, 15).until(lambda driver: driver.find_element(By.ID, "answer").is_displayed())
    terms = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#answer-fields dt")]
    values = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#answer-fields dd")]
    return {"title": browser.find_element(By.ID, "answer-title").text, **dict(zip(terms, values, strict=True))}


def flush(browser: WebDriver) -> None:
    browser.execute_async_script("window.shopTracing.flush().then(arguments[arguments.length - 1])")


# What the page exports for each order: the click, its fetch and "click to answer".
PAGE_SPANS = 3


def spans_of(tempo: OtlpSink, trace_id: str, timeout_s: float = 20) -> list[tuple[str, Span]]:
    """The trace's spans with their service names, once the page's three and the three services' have arrived
    (the fetch span ends once the page has read the body: it may come in the page's next batch)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            (resource["service.name"], span) for resource, span in tempo.spans() if span.trace_id.hex() == trace_id
        ]
        services = {service for service, _ in found}
        page_spans = sum(service == PAGE_SERVICE for service, _ in found)
        if (len(services) >= 4 and page_spans >= PAGE_SPANS) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def one(spans: list[tuple[str, Span]], service: str, name: str) -> Span:
    matching = [span for owner, span in spans if owner == service and span.name == name]
    assert len(matching) == 1, (service, name, [(owner, span.name) for owner, span in spans])
    return matching[0]


def test_buy_places_an_order_whose_trace_starts_at_the_click(kept_all: TracedShop, browser: WebDriver) -> None:
    open_page(browser, kept_all.gateway)
    answer = buy(browser)
    assert answer["title"] == "Order placed", answer
    assert (answer["HTTP status"], answer["Status"]) == ("201", "paid"), answer
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "shop-page.png"))
    trace_id = answer["Trace"]
    link = browser.find_element(By.LINK_TEXT, "Open this trace in Grafana").get_attribute("href") or ""
    assert link.startswith("http://localhost:3000/explore?"), link
    assert trace_id in link, link
    flush(browser)

    spans = spans_of(kept_all.tempo, trace_id)
    click = one(spans, PAGE_SERVICE, "click")
    fetch = one(spans, PAGE_SERVICE, "POST")
    shown = one(spans, PAGE_SERVICE, "click to answer")
    gateway = one(spans, "gateway", "POST /api/order")
    assert click.parent_span_id == b"", "the click is the trace's root"
    assert fetch.parent_span_id == click.span_id
    assert shown.parent_span_id == click.span_id
    assert gateway.parent_span_id == fetch.span_id
    assert {service for service, _ in spans} >= {PAGE_SERVICE, "gateway", "order-service", "payment-service"}
    # "click to answer" ends after the answer is shown, so after the gateway's span.
    assert shown.end_time_unix_nano >= gateway.end_time_unix_nano
    for service, span in spans:
        if service == PAGE_SERVICE:
            assert span.trace_state == gateway.trace_state, (span.name, span.trace_state, gateway.trace_state)


def test_the_card_number_is_in_no_span_and_no_url(kept_all: TracedShop, browser: WebDriver) -> None:
    open_page(browser, kept_all.gateway)
    answer = buy(browser)
    assert GOOD_CARD not in browser.current_url
    flush(browser)
    spans = spans_of(kept_all.tempo, answer["Trace"])
    page_spans = [span for service, span in spans if service == PAGE_SERVICE]
    assert len(page_spans) == PAGE_SPANS, [span.name for span in page_spans]
    for span in page_spans:
        assert GOOD_CARD.encode() not in span.SerializeToString(), span
    for resource, span in kept_all.tempo.spans():
        assert GOOD_CARD not in json.dumps(resource)
        assert GOOD_CARD.encode() not in span.SerializeToString()


def test_a_declined_card_and_an_invalid_field_show_their_messages(kept_all: TracedShop, browser: WebDriver) -> None:
    open_page(browser, kept_all.gateway)
    fill(browser, card_number=DECLINED_CARD)
    declined = buy(browser)
    assert declined["HTTP status"] == "402", declined
    assert "declined" in declined["title"].lower(), declined

    fill(browser, card_number=GOOD_CARD, quantity="0")
    invalid = buy(browser)
    assert invalid["HTTP status"] == "422", invalid
    quantity = browser.find_element(By.ID, "quantity")
    assert quantity.get_attribute("aria-invalid") == "true"
    assert browser.find_element(By.ID, "quantity-error").text, "no message beside the invalid field"
    assert browser.find_element(By.ID, "item").get_attribute("aria-invalid") is None


def test_enter_in_a_field_presses_buy(kept_all: TracedShop, browser: WebDriver) -> None:
    open_page(browser, kept_all.gateway)
    browser.execute_script("document.getElementById('answer').hidden = true")
    browser.find_element(By.ID, "customer_id").send_keys(Keys.ENTER)
    WebDriverWait(browser, 15).until(lambda driver: driver.find_element(By.ID, "answer").is_displayed())
    assert browser.find_element(By.ID, "answer-title").text == "Order placed"


def test_a_fault_order_from_the_page_carries_its_fault(kept_all: TracedShop, browser: WebDriver) -> None:
    open_page(browser, kept_all.gateway)
    fill(browser, quantity="1")
    browser.find_element(By.CSS_SELECTOR, "#fault option[value='failing-payment']").click()
    answer = buy(browser)
    assert answer["HTTP status"] == "502", answer


def gateway_server_requests(collector: Collector) -> float:
    """Requests the gateway's HTTP server metric counted (what the user -> gateway edge is recorded from)."""
    return collector.exported_sum("http_server_request_duration_seconds_count", job="shop/gateway")


def test_loading_the_page_and_exporting_spans_leave_the_gateway_rate_unchanged(kept_all: TracedShop) -> None:
    order = json.dumps(order_body()).encode()
    assert request("POST", f"{kept_all.gateway}/api/order", order, "application/json")[0] == 201
    before = settled_gateway_requests(kept_all.collector)
    assert before > 0, "the gateway's request metric is not where this test reads it"
    for path in ("/", "/static/shop.js", "/static/shop.css", "/static/tracing.js"):
        status, _, _ = request("GET", f"{kept_all.gateway}{path}")
        assert status == 200, path
    status, _, _ = request("POST", f"{kept_all.gateway}/otlp/v1/traces", b"{}", "application/json")
    assert status == 200
    time.sleep(3)  # three of the services' metric exports
    assert settled_gateway_requests(kept_all.collector) == before
    served = {
        span.name
        for resource, span in kept_all.tempo.spans()
        if resource["service.name"] == "gateway" and span.kind == Span.SPAN_KIND_SERVER
    }
    assert served <= {"POST /api/order", "GET /api/order/{order_id}"}, served


def settled(read: Callable[[], float], interval_s: float, reads: int, what: str) -> float:
    """``read()``'s value once two reads ``interval_s`` apart agree on a count above 0."""
    previous = -1.0
    for _ in range(reads):
        current = read()
        if current == previous and current > 0:
            return current
        previous = current
        time.sleep(interval_s)
    raise TimeoutError(f"{what} did not settle")


def settled_gateway_requests(collector: Collector) -> float:
    return settled(lambda: gateway_server_requests(collector), 1.2, 20, "the gateway's request count")


def request(
    method: str, url: str, body: bytes | None = None, content_type: str | None = None, **headers: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request with raw bytes: (status, JSON body or {}, headers)."""
    sent = {
        **({"Content-Type": content_type} if content_type else {}),
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    call = urllib.request.Request(url, data=body, method=method, headers=sent)
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            status, raw, answered = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, answered = error.code, error.read(), dict(error.headers)
    try:
        return status, json.loads(raw), answered
    except (json.JSONDecodeError, UnicodeDecodeError):
        return status, {}, answered


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedShop]:
    with traced_shop(tmp_path_factory.mktemp("browser-sampled"), TRACES_SAMPLE_RATIO=str(P)) as shop:
        yield shop


# Clicks Buy `count` times, one order at a time, and gives back each answer: its trace and whether the page
# offered the link to it (the answer said trace_sampled). The page's spans are flushed at the end.
CLICK_LOOP = """
const [count, done] = [arguments[0], arguments[arguments.length - 1]];
const button = document.getElementById('buy');
const sleep = () => new Promise((resolve) => setTimeout(resolve, 2));
(async () => {
  const answers = [];
  for (let n = 0; n < count; n++) {
    button.click();
    while (button.disabled) await sleep();
    const rows = Object.fromEntries([...document.querySelectorAll('#answer-fields dt')]
      .map((term) => [term.textContent, term.nextElementSibling.textContent]));
    const kept = !!document.querySelector('#answer-trace a');
    answers.push({trace: rows['Trace'], status: rows['HTTP status'], kept});
  }
  await window.shopTracing.flush();
  done(answers);
})();
"""


def test_at_p_below_1_the_page_exports_exactly_the_traces_the_gateway_kept(
    sampled: TracedShop, browser: WebDriver
) -> None:
    open_page(browser, sampled.gateway)
    answers = browser.execute_async_script(CLICK_LOOP, CLICKS)
    assert [answer["status"] for answer in answers] == ["201"] * CLICKS
    time.sleep(3)  # spans that ended after the flush go in the page's next batch (1 s)
    sampled.collector.wait_until_idle()

    kept = {answer["trace"] for answer in answers if answer["kept"]}
    bound = 4 * math.sqrt(CLICKS * P * (1 - P))
    print(f"{len(kept)} of {CLICKS} clicks kept at p = {P} (expected {CLICKS * P:.0f} ± {bound:.0f})")
    assert abs(len(kept) - CLICKS * P) <= bound

    traces: dict[str, list[tuple[str, Span]]] = defaultdict(list)
    for resource, span in sampled.tempo.spans():
        traces[span.trace_id.hex()].append((resource["service.name"], span))
    with_page_spans = {trace_id for trace_id, spans in traces.items() if any(s == PAGE_SERVICE for s, _ in spans)}
    # A dropped trace exported no browser span; each kept one exported all of them.
    assert with_page_spans == kept, (len(with_page_spans - kept), len(kept - with_page_spans))
    for trace_id in kept:
        spans = traces[trace_id]
        gateway = one(spans, "gateway", "POST /api/order")  # no orphan: the gateway's span is there
        page = [span for service, span in spans if service == PAGE_SERVICE]
        assert len(page) == PAGE_SPANS, [span.name for span in page]
        assert {span.trace_state for span in page} == {gateway.trace_state}, (trace_id, gateway.trace_state)
        assert gateway.trace_state.startswith("ot=th:"), gateway.trace_state

    # Span metrics extrapolate the page's spans from the threshold they carry, as they do the services'.
    clicks = settled_count(sampled.collector, service_name=PAGE_SERVICE, span_name="click")
    count_bound = 4 * math.sqrt(CLICKS * (1 - P) / P)
    print(f"span metrics count {clicks:.0f} clicks for {CLICKS} (bound ±{count_bound:.0f})")
    assert abs(clicks - CLICKS) <= count_bound


def settled_count(collector: Collector, **labels: str) -> float:
    """A span-metrics count once two reads a flush apart (5 s) agree."""
    count = functools.partial(collector.exported_sum, "traces_span_metrics_calls_total", **labels)
    return settled(count, 5.5, 12, f"span metrics for {labels}")


@contextmanager
def ingest_gateway(workdir: Path, browser_otlp_endpoint: str, **env: str) -> Iterator[str]:
    """A gateway alone, forwarding page spans to ``browser_otlp_endpoint``; its URL."""
    gateway = start_service(
        "shop.gateway",
        free_port(),
        workdir,
        BROWSER_OTLP_ENDPOINT=browser_otlp_endpoint,
        OTEL_SDK_DISABLED="true",
        **env,
    )
    try:
        yield gateway.url
    finally:
        gateway.kill()


ALLOWED_SPAN_ATTRIBUTES = {
    "event_type",
    "target_element",
    "target_xpath",
    "url.full",
    "http.request.method",
    "http.request.method_original",
    "http.response.status_code",
    "server.address",
    "server.port",
    "error.type",
}


def forged_body(trace_id: str) -> bytes:
    """OTLP/JSON that poses as the gateway's server spans, with attributes the page never sets: one span with an
    event and one without (each of the Collector's statement groups must reach both)."""
    forged = {"http.route": "/api/order", "card_number": GOOD_CARD}
    event = {"name": "forged", "timeUnixNano": str(time.time_ns()), "attributes": attributes({"card": GOOD_CARD})}
    spans = [
        json_span(trace_id, "POST /api/order", kind=SPAN_KIND_SERVER, trace_state="ot=th:0", span_attributes=forged)
        | ({"events": [event]} if with_event else {})
        for with_event in (True, False)
    ]
    resource = {"service.name": "gateway", "service.namespace": "shop", "host.name": GOOD_CARD}
    return traces_body(resource, spans)


def test_a_forged_body_cannot_pose_as_a_service(kept_all: TracedShop, tmp_path: Path) -> None:
    order = json.dumps(order_body()).encode()
    assert request("POST", f"{kept_all.gateway}/api/order", order, "application/json")[0] == 201
    trace_id = os.urandom(16).hex()
    with ingest_gateway(tmp_path, kept_all.collector.browser_otlp_endpoint) as gateway:
        status, _, _ = request("POST", f"{gateway}/otlp/v1/traces", forged_body(trace_id), "application/json")
    assert status == 200
    kept_all.collector.wait_until_idle()
    arrived = [(resource, span) for resource, span in kept_all.tempo.spans() if span.trace_id.hex() == trace_id]
    assert len(arrived) == 2, arrived
    for resource, span in arrived:
        assert resource == {"service.name": PAGE_SERVICE, "service.namespace": "shop"}, resource
        assert {attribute.key for attribute in span.attributes} <= ALLOWED_SPAN_ATTRIBUTES
        assert GOOD_CARD.encode() not in span.SerializeToString()
    # The gateway's own span metrics count its real server spans only (p = 1: each once).
    real = sum(
        1
        for resource, span in kept_all.tempo.spans()
        if resource["service.name"] == "gateway" and span.name == "POST /api/order"
    )
    assert settled_count(kept_all.collector, service_name="gateway", span_name="POST /api/order") == real
    assert settled_count(kept_all.collector, service_name=PAGE_SERVICE, span_name="POST /api/order") == len(arrived)


def test_hostile_bodies_get_4xx_and_never_reach_tempo(kept_all: TracedShop, tmp_path: Path) -> None:
    received = len(kept_all.tempo.spans())
    with ingest_gateway(tmp_path, kept_all.collector.browser_otlp_endpoint, BROWSER_TRACES_MAX_BYTES="2048") as gateway:
        url = f"{gateway}/otlp/v1/traces"
        refused = {
            "text/plain": request("POST", url, b"{}", "text/plain"),
            "no content type": request("POST", url, b"{}"),
            "gzip": request("POST", url, gzip.compress(b"{}"), "application/json", Content_Encoding="gzip"),
            "too large": request("POST", url, b" " * 4096 + b"{}", "application/json"),
            "malformed JSON": request("POST", url, b'{"resourceSpans": [', "application/json"),
            "not protobuf": request("POST", url, b"\xff\xff\xff\xff", "application/x-protobuf"),
            "wrong shape": request("POST", url, b'{"resourceSpans": 7}', "application/json"),
            "metrics path": request("POST", f"{gateway}/otlp/v1/metrics", b"{}", "application/json"),
        }
    statuses = {name: answer[0] for name, answer in refused.items()}
    print(statuses)
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    assert (statuses["gzip"], statuses["text/plain"], statuses["too large"]) == (415, 415, 413)
    for name, (status, body, _) in refused.items():
        assert body.get("error", {}).get("code"), (name, status, body)
    kept_all.collector.wait_until_idle()
    assert len(kept_all.tempo.spans()) == received


def test_ingest_is_rate_limited_per_client(kept_all: TracedShop, tmp_path: Path) -> None:
    with ingest_gateway(tmp_path, kept_all.collector.browser_otlp_endpoint, BROWSER_TRACES_PER_MINUTE="60") as gateway:
        answers = [request("POST", f"{gateway}/otlp/v1/traces", b"{}", "application/json") for _ in range(15)]
    statuses = [status for status, _, _ in answers]
    # Ten seconds' worth (10) at once, then about one a second.
    assert statuses[:10] == [200] * 10, statuses
    limited = [headers for status, _, headers in answers if status == 429]
    assert limited, statuses
    assert all(int(headers["Retry-After"]) >= 1 for headers in limited), statuses


def test_with_the_collector_down_ingest_answers_503_with_retry_after(tmp_path: Path) -> None:
    with ingest_gateway(tmp_path, f"http://127.0.0.1:{free_port()}") as gateway:
        status, body, headers = request("POST", f"{gateway}/otlp/v1/traces", b"{}", "application/json")
    assert (status, body["error"]["code"]) == (503, "collector_unavailable"), body
    assert int(headers["Retry-After"]) > 0
