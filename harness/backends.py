"""The real Collector (built from otel-collector/builder-config.yaml), with recording stand-ins for Tempo and
Loki, and the real Prometheus, as processes for the tests and ``make bench``.

Whether the binaries are there is the caller's question: tests skip (tests/tools.py), the bench says what
to install.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness import ROOT
from harness.compose import dotenv
from harness.otlp_sink import OtlpSink
from harness.processes import BackgroundProcess, Shop, free_port, http

COLLECTOR_BINARY = ROOT / "build" / "otelcol" / "otelcol-shop"
COLLECTOR_CONFIG = ROOT / "otel-collector" / "config.yaml"
# What each Collector runs: config.yaml alone, or one tier of two merged over it (docs/scaling.md).
# docker-compose.two-tier.yml names the same files (a test checks).
COLLECTOR_ROLES: dict[str, tuple[Path, ...]] = {
    "single": (COLLECTOR_CONFIG,),
    "agent": (COLLECTOR_CONFIG, COLLECTOR_CONFIG.with_name("agent.yaml")),
    "gateway": (COLLECTOR_CONFIG, COLLECTOR_CONFIG.with_name("gateway.yaml")),
}
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = ROOT / "prometheus" / "rules"
# The name compose's DNS gives every Collector container (one, or agents and gateways), for Prometheus.
COLLECTORS_DNS_NAME = "otel-collectors"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_RELEASE = dotenv()["PROMETHEUS_VERSION"].removeprefix("v")
"""The release compose runs (its image tag, set once in .env), which ``make prometheus`` builds here."""
PROMETHEUS_BUILD = ROOT / "build" / f"prometheus-{PROMETHEUS_RELEASE}"


class Collector:
    """The built Collector running the real config (of a role: COLLECTOR_ROLES), every address moved to a
    free loopback port; ``env`` sets what the role's config reads besides."""

    # A subclass may run another build (scripts/collector_drills.py runs an earlier revision's).
    binary = COLLECTOR_BINARY

    def __init__(
        self,
        workdir: Path,
        tempo_endpoint: str,
        loki_endpoint: str,
        role: str | tuple[Path, ...] = "single",
        **env: str,
    ) -> None:
        self.ports = {name: free_port() for name in ("grpc", "http", "browser", "health", "prometheus", "telemetry")}
        self.workdir = workdir
        # A role's configs, or the configs themselves.
        self.configs = COLLECTOR_ROLES[role] if isinstance(role, str) else role
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['grpc']}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['http']}",
            "OTELCOL_BROWSER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['browser']}",
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.ports['health']}",
            "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{self.ports['prometheus']}",
            "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
            "OTELCOL_TELEMETRY_PORT": str(self.ports["telemetry"]),
            # The exporters' queues: in the workdir, so that a restart (start() again) finds what it held.
            "OTELCOL_QUEUE_DIRECTORY": str(workdir / "queues"),
            "TEMPO_OTLP_HTTP_ENDPOINT": tempo_endpoint,
            "LOKI_OTLP_HTTP_ENDPOINT": loki_endpoint,
            **env,
        }
        self.process = self.start()

    def start(self) -> BackgroundProcess:
        """Start (again, after a kill) on the same ports; returns once its health check answers."""
        self.process = BackgroundProcess.start(
            "otelcol",
            [str(self.binary), *(f"--config={config}" for config in self.configs)],
            self.workdir,
            self.env,
            f"http://127.0.0.1:{self.ports['health']}",
            "/",
        )
        return self.process

    @staticmethod
    def samples(target: str) -> list[Sample]:
        status, text, _ = http("GET", f"http://{target}/metrics")
        assert status == 200
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def own_counters(self) -> dict[str, float]:
        """The Collector's own metrics, summed per name (as Prometheus names them: no ``_total``),
        read straight from its telemetry endpoint."""
        totals: dict[str, float] = defaultdict(float)
        for sample in self.samples(self.telemetry_target):
            totals[sample.name.removesuffix("_total")] += sample.value
        return dict(totals)

    @classmethod
    def summed(cls, target: str, sample_name: str, labels: Mapping[str, str]) -> float:
        """The sum of one metric's samples with these labels, as ``target``'s /metrics shows it."""
        return sum(
            sample.value
            for sample in cls.samples(target)
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def own_value(self, sample_name: str, **labels: str) -> float:
        """One of the Collector's own metrics, summed over the samples with these labels."""
        return self.summed(self.telemetry_target, sample_name, labels)

    def exported_sum(self, sample_name: str, **labels: str) -> float:
        """The sum of one metric's samples with these labels, as the Collector's Prometheus exporter shows it."""
        return self.summed(self.prometheus_target, sample_name, labels)

    def wait_until_idle(self, timeout_s: float = 30) -> None:
        """Until all it accepted has been sent on and nothing new arrived for a while (bounded)."""
        deadline = time.monotonic() + timeout_s
        previous: dict[str, float] = {}
        while time.monotonic() < deadline:
            counters = self.own_counters()
            flow = {
                name: counters.get(name, 0.0)
                for signal in ("spans", "log_records")
                for name in (f"otelcol_receiver_accepted_{signal}", f"otelcol_exporter_sent_{signal}")
            }
            settled = all(
                flow[f"otelcol_receiver_accepted_{signal}"] == flow[f"otelcol_exporter_sent_{signal}"]
                for signal in ("spans", "log_records")
            )
            if settled and flow == previous:
                return
            previous = flow
            time.sleep(1.5)
        raise TimeoutError(f"the Collector was still busy after {timeout_s} s")

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def browser_otlp_endpoint(self) -> str:
        """The receiver of the shop page's spans (the gateway's BROWSER_OTLP_ENDPOINT)."""
        return f"http://127.0.0.1:{self.ports['browser']}"

    @property
    def otlp_grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def prometheus_target(self) -> str:
        return f"127.0.0.1:{self.ports['prometheus']}"

    @property
    def telemetry_target(self) -> str:
        return f"127.0.0.1:{self.ports['telemetry']}"


Targets = Mapping[str, str | Sequence[str]]


def localized_prometheus_config(targets: Targets) -> dict[str, Any]:
    """prometheus.yml with each compose target replaced (by one or several), and each DNS name that compose
    resolves to every Collector by the Collectors' targets (``name:port``): a target without a replacement
    is an error."""

    def replaced(target: str) -> list[str]:
        found = targets[target]
        return [found] if isinstance(found, str) else list(found)

    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for job in config["scrape_configs"]:
        static_configs = job.setdefault("static_configs", [])
        for static in static_configs:
            static["targets"] = [local for target in static["targets"] for local in replaced(target)]
        # The name each target was found by stays a label, as DNS discovery gives it to relabel_configs.
        for dns in job.pop("dns_sd_configs", []):
            static_configs.extend(
                {"targets": replaced(f"{name}:{dns['port']}"), "labels": {"__meta_dns_name": name}}
                for name in dns["names"]
            )
    return config


@contextmanager
def collector_with_stand_ins(
    workdir: Path,
    collector_class: type[Collector] = Collector,
    role: str | tuple[Path, ...] = "single",
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[Collector, OtlpSink, OtlpSink]]:
    """The built Collector (or ``collector_class``'s build, running ``role``'s configs) exporting to two recording
    receivers in place of Tempo and Loki (whose OTLP endpoint has the /otlp base path); stopped on the way out,
    whichever process it is by then. ``env``: what its config reads besides the addresses (OTELCOL_QUEUE_BYTES)."""
    with OtlpSink() as tempo, OtlpSink() as loki:
        collector = collector_class(workdir / "otelcol", tempo.endpoint, f"{loki.endpoint}/otlp", role, **(env or {}))
        try:
            yield collector, tempo, loki
        finally:
            collector.process.stop()


def scrape_targets(collectors: Sequence[Collector], shop_ports: dict[str, int]) -> Targets:
    """prometheus.yml's compose targets, each moved to where the test's Collectors and services listen."""
    return {
        f"{COLLECTORS_DNS_NAME}:8889": [collector.prometheus_target for collector in collectors],
        f"{COLLECTORS_DNS_NAME}:8888": [collector.telemetry_target for collector in collectors],
        "gateway:8000": f"127.0.0.1:{shop_ports['shop.gateway']}",
        "order-service:8001": f"127.0.0.1:{shop_ports['shop.orders']}",
        "payment-service:8002": f"127.0.0.1:{shop_ports['shop.payments']}",
    }


@dataclass(frozen=True)
class PrometheusInstall:
    """A prometheus and promtool pair, and which release they are."""

    prometheus: str
    promtool: str
    version: str
    built: bool  # from the Go module proxy by ``make prometheus``, or else found on PATH

    def __str__(self) -> str:
        where = f"built into {PROMETHEUS_BUILD.relative_to(ROOT)}" if self.built else f"from {self.prometheus}"
        return f"Prometheus {self.version} {where}"


@functools.cache
def find_prometheus() -> PrometheusInstall | None:
    """The release compose runs where ``make prometheus`` built it (needs Go); else the one on PATH, which for a
    user without Go is Debian's older package; else None."""
    built = PROMETHEUS_BUILD / "prometheus", PROMETHEUS_BUILD / "promtool"
    if all(path.exists() for path in built):
        return PrometheusInstall(str(built[0]), str(built[1]), PROMETHEUS_RELEASE, built=True)
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        return None
    # "prometheus, version 2.42.0+ds (branch: ...)"
    banner = subprocess.run([prometheus, "--version"], capture_output=True, text=True, timeout=30, check=True)
    version = (banner.stdout or banner.stderr).split()[2]
    return PrometheusInstall(prometheus, promtool, version, built=False)


def compose_feature_flags() -> list[str]:
    """The ``--enable-feature`` flags docker-compose.yml starts Prometheus with (exemplar storage: still a
    feature flag in 3.14), so that the tests start it the same way."""
    command: list[str] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["prometheus"]["command"]
    return [flag for flag in command if flag.startswith("--enable-feature=")]


class Prometheus:
    """The real Prometheus (see find_prometheus) with the real config and rules; only the scrape targets
    point elsewhere."""

    def __init__(self, workdir: Path, targets: Targets) -> None:
        install = find_prometheus()
        if install is None:
            raise RuntimeError(f"no Prometheus: `make prometheus` builds {PROMETHEUS_RELEASE} (needs Go)")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = localized_prometheus_config({**targets, "localhost:9090": f"127.0.0.1:{self.port}"})
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copytree(PROMETHEUS_RULES, workdir / "rules", dirs_exist_ok=True)
        self.process = BackgroundProcess.start(
            "prometheus",
            [
                install.prometheus,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *compose_feature_flags(),
            ],
            workdir,
            {"PATH": os.environ.get("PATH", "")},
            f"http://127.0.0.1:{self.port}",
            "/-/ready",
        )

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body, _ = http("GET", f"{self.process.url}/api/v1/{path}?{query}")
        assert status == 200, body
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def exemplars(self, expr: str, since_s: float = 3600) -> list[dict[str, Any]]:
        now = time.time()
        data: list[dict[str, Any]] = self.api("query_exemplars", query=expr, start=str(now - since_s), end=str(now))
        return data

    def wait_for(self, expr: str, timeout_s: float = 60) -> list[dict[str, Any]]:
        """Poll until the query returns data (bounded), and return it."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(1)

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]


def dump(value: Any) -> str:
    return json.dumps(value, indent=1)[:4000]


@dataclass
class ObservedShop:
    """The three services exporting to the built Collector (Tempo and Loki stand-ins behind it), scraped
    by the real Prometheus."""

    shop: Shop
    collector: Collector
    tempo: OtlpSink
    loki: OtlpSink
    prometheus: Prometheus


@contextmanager
def observed_shop(workdir: Path, **env: str) -> Iterator[ObservedShop]:
    """Start it all; on the way out stop (and if need be kill) the services, then Prometheus and the Collector."""
    with collector_with_stand_ins(workdir) as (collector, tempo, loki):
        shop = Shop(
            workdir / "shop",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_endpoint,
            BROWSER_OTLP_ENDPOINT=collector.browser_otlp_endpoint,
            **env,
        )
        prometheus = None
        try:
            shop.start_all()
            prometheus = Prometheus(workdir / "prometheus", scrape_targets([collector], shop.ports))
            yield ObservedShop(shop, collector, tempo, loki, prometheus)
        finally:
            shop.kill_all()
            if prometheus is not None:
                prometheus.process.stop()
