"""``python -m shop.probe URL [--wait SECONDS]``: exit 0 once URL answers 200.

Used by docker compose: as the services' health check (they have Python, so no curl is needed),
and as a one-shot readiness gate for the Collector, whose distroless image has no shell to run one.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

ATTEMPT_TIMEOUT_S = 2.0


def answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=ATTEMPT_TIMEOUT_S) as response:  # noqa: S310 (operator's URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shop.probe", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="an http:// URL that answers 200 when ready")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="keep trying this long")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"not an http(s) URL: {args.url!r}")
    deadline = time.monotonic() + args.wait
    while True:
        if answers_ok(args.url):
            return 0
        if time.monotonic() >= deadline:
            print(f"{args.url} is not ready", file=sys.stderr)
            return 1
        time.sleep(1)


if __name__ == "__main__":
    raise SystemExit(main())
