"""``python -m shop.devrun``: all three services in the foreground, for ``make run``.

Ctrl-C (or SIGTERM) stops all three and waits for them; if one dies, the others are stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from shop.settings import DEFAULT_PORTS, GATEWAY, ORDER_SERVICE, PAYMENT_SERVICE

# Started in this order, each pointed at the next one's port.
SERVICES = ("shop.payments", "shop.orders", "shop.gateway")
STOP_TIMEOUT_S = 10.0

# Local defaults a person trying the shop wants; anything already set in the environment wins.
LOCAL_DEFAULTS = {
    "GATEWAY_ALLOW_FAULT_HEADERS": "true",
    "OTEL_METRIC_EXPORT_INTERVAL": "10000",
}


def service_environments(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each service's environment; GATEWAY_PORT, ORDERS_PORT and PAYMENTS_PORT move them."""
    base = {**LOCAL_DEFAULTS, **env}
    gateway_port = base.get("GATEWAY_PORT", str(DEFAULT_PORTS[GATEWAY]))
    orders_port = base.get("ORDERS_PORT", str(DEFAULT_PORTS[ORDER_SERVICE]))
    payments_port = base.get("PAYMENTS_PORT", str(DEFAULT_PORTS[PAYMENT_SERVICE]))
    return {
        "shop.payments": {**base, "PORT": payments_port},
        "shop.orders": {**base, "PORT": orders_port, "PAYMENTS_URL": f"http://127.0.0.1:{payments_port}"},
        "shop.gateway": {**base, "PORT": gateway_port, "ORDERS_URL": f"http://127.0.0.1:{orders_port}"},
    }


def _stop(processes: list[subprocess.Popen[bytes]]) -> int:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return max((abs(p.returncode or 0) for p in processes), default=0)


def main() -> int:
    environments = service_environments(dict(os.environ))
    started = {
        # Own sessions: Ctrl-C reaches only this launcher, which then stops each service exactly once.
        module: subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", module], env=environments[module], start_new_session=True
        )
        for module in SERVICES
    }
    processes = list(started.values())
    ports = {module: environments[module]["PORT"] for module in SERVICES}
    print(
        f"gateway http://127.0.0.1:{ports['shop.gateway']} (the shop page), order-service :{ports['shop.orders']}, "
        f"payment-service :{ports['shop.payments']}; Ctrl-C stops all three",
        file=sys.stderr,
        flush=True,
    )
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping and all(p.poll() is None for p in processes):
        time.sleep(0.2)
    if not stopping:
        module, died = next((m, p) for m, p in started.items() if p.poll() is not None)
        print(f"{module} exited with {died.returncode}; stopping the others", file=sys.stderr)
    print("stopping the three services", file=sys.stderr, flush=True)
    status = _stop(processes)
    print(f"all stopped (exit status {status})", file=sys.stderr, flush=True)
    return status if stopping else max(status, 1)


if __name__ == "__main__":
    raise SystemExit(main())
