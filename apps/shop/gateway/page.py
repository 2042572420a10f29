"""The shop page: ``GET /`` and its files under ``/static/`` (docs/browser.md).

The HTML is apps/web/page/index.html with three marks filled in: the page's settings (Grafana's
links, the fault orders where they are honoured), the tracing bundle's script tag (or, without a built
bundle, a line saying how to build it: the form works either way), and that line's place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from shop.gateway.edge import DB_DELAY_HEADER, DELAY_HEADER, FAIL_HEADER
from shop.grafana_links import loki_link, tempo_link
from shop.settings import GatewaySettings

# The page replaces it with a trace ID: letters that survive URL quoting and occur nowhere else in a link.
TRACE_ID_MARK = "TRACEID"
BUNDLE = Path("dist") / "tracing.js"
# What /static/ serves, and as what: nothing else under apps/web is reachable.
STATIC_FILES = {
    "shop.js": (Path("page") / "shop.js", "text/javascript"),
    "shop.css": (Path("page") / "shop.css", "text/css"),
    "tracing.js": (BUNDLE, "text/javascript"),
    "tracing.js.map": (BUNDLE.with_suffix(".js.map"), "application/json"),
}
# The demo's fault orders (make demo places the same), offered where the gateway honours fault headers.
FAULT_ORDERS = [
    {"value": "slow-payment", "label": "slow payment (1.5 s)", "headers": {DELAY_HEADER: "1500"}},
    {"value": "failing-payment", "label": "failing payment", "headers": {FAIL_HEADER: "true"}},
    {"value": "slow-database", "label": "slow database (1 s, PostgreSQL only)", "headers": {DB_DELAY_HEADER: "1000"}},
]
# Same-origin everything; the settings block is JSON data, never run.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
NO_BUNDLE_NOTICE = (
    '<p class="notice">Browser tracing is off: the tracing bundle is not built. '
    "Run <code>make web</code> (needs Node.js and npm) and reload: orders work either way.</p>"
)


def page_config(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "traceLink": tempo_link(settings.grafana_public_url, TRACE_ID_MARK),
        "logsLink": loki_link(settings.grafana_public_url, TRACE_ID_MARK),
        "faults": FAULT_ORDERS if settings.honours_fault_headers else [],
    }


def render_page(settings: GatewaySettings) -> str:
    html = (settings.web_root / "page" / "index.html").read_text(encoding="utf-8")
    # "<" escaped, so no value can close the script element.
    config = json.dumps(page_config(settings)).replace("<", "\\u003c")
    traced = (settings.web_root / BUNDLE).is_file()
    marks = {
        "<!--shop:config-->": f'<script type="application/json" id="shop-config">{config}</script>',
        "<!--shop:tracing-->": '<script src="/static/tracing.js" defer></script>' if traced else "",
        "<!--shop:notice-->": "" if traced else NO_BUNDLE_NOTICE,
    }
    for mark, value in marks.items():
        html = html.replace(mark, value)
    return html


@dataclass(frozen=True)
class ShopPage:
    """The page, rendered per request (cheap, and a bundle built after start-up shows at the next load)."""

    settings: GatewaySettings

    @property
    def web_root(self) -> Path:
        return self.settings.web_root

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=render_page(self.settings), content_type="text/html", headers=PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.StreamResponse:
        found = STATIC_FILES.get(request.match_info["name"])
        if found is None or not (self.web_root / found[0]).is_file():
            raise web.HTTPNotFound()
        path, content_type = found
        return web.FileResponse(
            self.web_root / path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)
