"""Running the services as real processes (``python -m shop.<service>``), as ``make run`` and the image do."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ROOT
from harness.database import sqlite_url
from harness.otlp_sink import OtlpSink

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A loopback port nothing listens on (a service pointed here is 'down')."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """One request with the standard library: (status, decoded JSON or text, headers)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, response_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, response_headers = error.code, error.read(), error.headers
    text = raw.decode()
    try:
        return status, json.loads(text), response_headers
    except json.JSONDecodeError:
        return status, text, response_headers


def process_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWAY_", "ORDERS_", "PAYMENTS_"))}
    env["PYTHONPATH"] = str(ROOT / "apps")
    env.update(overrides)
    return env


@dataclass
class BackgroundProcess:
    """A program started for a test or a benchmark, its output in files, stopped with a bounded wait."""

    name: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    url: str

    @classmethod
    def start(
        cls, name: str, command: list[str], workdir: Path, env: dict[str, str], url: str, ready_path: str
    ) -> BackgroundProcess:
        """Start ``command`` and wait until ``url + ready_path`` answers 200."""
        workdir.mkdir(parents=True, exist_ok=True)
        stdout_path, stderr_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
        with stdout_path.open("ab") as stdout, stderr_path.open("ab") as stderr:
            process = subprocess.Popen(command, env=env, cwd=workdir, stdout=stdout, stderr=stderr)
        started = cls(name, process, stdout_path, stderr_path, url)
        started.wait_until_ready(ready_path)
        return started

    def wait_until_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.stderr_path.read_text()}")
            try:
                if http("GET", f"{self.url}{path}")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer {path} within {START_TIMEOUT_S} s")

    def stop(self, sig: signal.Signals | None = signal.SIGTERM) -> int:
        """Send a signal (once: a second SIGTERM means 'force') and wait, bounded, for the exit status."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.strip()]


def start_service(module: str, port: int, workdir: Path, launcher: Sequence[str] = (), **env: str) -> BackgroundProcess:
    """``python -m shop.<service>`` on ``port`` (behind ``launcher``, e.g. ``opentelemetry-instrument``), once
    its /healthz answers."""
    return BackgroundProcess.start(
        module.rsplit(".", 1)[-1],
        [*launcher, sys.executable, "-m", module],
        workdir,
        process_env(PORT=str(port), **env),
        f"http://127.0.0.1:{port}",
        "/healthz",
    )


SERVICE_NAMES = {"shop.gateway": "gateway", "shop.orders": "order-service", "shop.payments": "payment-service"}


class Shop:
    """The three services as processes, each pointed at the next one's port; ``env`` for all of them, and
    ``per_service`` (module -> variables, set before starting) over it for some."""

    def __init__(self, workdir: Path, launcher: Sequence[str] = (), **env: str) -> None:
        self.workdir = workdir
        self.launcher = launcher
        self.env = {"ORDERS_DATABASE_URL": sqlite_url(workdir / "orders.sqlite3"), **env}
        self.per_service: dict[str, dict[str, str]] = {}
        self.ports = {module: free_port() for module in SERVICE_NAMES}
        self.running: dict[str, BackgroundProcess] = {}

    def start(self, module: str) -> BackgroundProcess:
        links = {
            "shop.orders": {"PAYMENTS_URL": f"http://127.0.0.1:{self.ports['shop.payments']}"},
            "shop.gateway": {"ORDERS_URL": f"http://127.0.0.1:{self.ports['shop.orders']}"},
        }.get(module, {})
        env = {**self.env, **self.per_service.get(module, {}), **links}
        service = start_service(module, self.ports[module], self.workdir, self.launcher, **env)
        self.running[module] = service
        return service

    def start_all(self) -> None:
        for module in ("shop.payments", "shop.orders", "shop.gateway"):
            self.start(module)

    @property
    def gateway(self) -> str:
        return self.running["shop.gateway"].url

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to all at once (as compose and make run do), then the exit status of each."""
        for service in self.running.values():
            service.process.send_signal(signal.SIGTERM)
        return {module: service.stop(sig=None) for module, service in self.running.items()}

    def kill_all(self) -> None:
        for service in self.running.values():
            service.kill()


@contextmanager
def running_shop(workdir: Path, **env: str) -> Iterator[Shop]:
    """The three services exporting to a recording OTLP receiver, stopped (and if need be killed) after."""
    with OtlpSink() as sink:
        shop = Shop(workdir, OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, **env)
        try:
            shop.start_all()
            yield shop
        finally:
            shop.stop_all()
            shop.kill_all()


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
