"""Running the services as real processes (``python -m shop.<service>``), as ``make run`` and the image do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


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
class ServiceProcess:
    module: str
    port: int
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, module: str, port: int, workdir: Path, **env: str) -> ServiceProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        name = module.rsplit(".", 1)[-1]
        stdout_path, stderr_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
        with stdout_path.open("ab") as stdout, stderr_path.open("ab") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                env=process_env(PORT=str(port), **env),
                cwd=workdir,
                stdout=stdout,
                stderr=stderr,
            )
        service = cls(module, port, process, stdout_path, stderr_path)
        service.wait_until_live()
        return service

    def wait_until_live(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited with {self.process.returncode}: {self.stderr_path.read_text()}"
                )
            try:
                if http("GET", f"{self.url}/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} did not answer /healthz within {START_TIMEOUT_S} s")

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

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.strip()]
