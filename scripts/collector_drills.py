"""``make collector-drills``: the drills of tests/test_collector_queues.py, counting what is lost instead of
asserting that nothing is, with this checkout's Collector and config and with an earlier revision's, side by
side (docs/reliability.md#before-and-after).

Each drill places paid orders at --rate from one client while the Collector is SIGKILLed (and started again
on the same ports and queue directory) or Tempo's stand-in is down, then looks every order up: an order's
trace is broken when the Tempo stand-in lacks any of its spans; its log records are lost when the Loki
stand-in lacks them. --before REV builds REV's Collector from REV's builder manifest (into build/otelcol-REV,
with the builder `make collector` installed) and runs it with REV's config.yaml; its services export with
the SDK's 10 s timeout, as they did before the queues changed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import ROOT
from harness.backends import COLLECTOR_BINARY, COLLECTOR_CONFIG, Collector
from harness.drills import Drill, Losses, drill_shop

MANIFEST = "otel-collector/builder-config.yaml"
QUEUED_EXPORTERS = ("otlp_http/tempo", "otlp_http/loki")
SIZING_S = 20.0
# make bench's fixed rate, and its closed loop's orders/s with full telemetry (docs/performance.md).
QUEUE_SIZING_RATES = (50.0, 276.0)


@dataclass(frozen=True)
class Setup:
    name: str
    collector: type[Collector]
    config: Path
    service_env: dict[str, str]


def build_revision(revision: str) -> Setup:
    """REV's Collector, built from REV's manifest, and REV's config."""
    out = ROOT / "build" / f"otelcol-{revision}"
    out.mkdir(parents=True, exist_ok=True)
    manifest = yaml.safe_load(git_show(revision, MANIFEST))
    manifest["dist"]["output_path"] = str(out)
    (out / "builder-config.yaml").write_text(yaml.safe_dump(manifest))
    (out / "config.yaml").write_text(git_show(revision, "otel-collector/config.yaml"))
    binary = out / manifest["dist"]["name"]
    if not binary.exists():
        builder = ROOT / "build" / "bin" / f"builder-v{manifest['dist']['version']}"
        print(f"==> building {revision}'s Collector into {out}", file=sys.stderr, flush=True)
        subprocess.run([str(builder), f"--config={out / 'builder-config.yaml'}"], check=True, cwd=ROOT)  # noqa: S603 (the builder, fixed arguments)

    class Earlier(Collector):
        pass

    Earlier.binary = binary
    return Setup(f"before ({revision})", Earlier, out / "config.yaml", {"OTEL_EXPORTER_OTLP_TIMEOUT": "10"})


def git_show(revision: str, path: str) -> str:
    shown = subprocess.run(  # noqa: S603 (git, with the operator's revision)
        ["git", "show", f"{revision}:{path}"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return shown.stdout


def run(setup: Setup, outage: Callable[[Drill], None], rate: float, max_orders: int) -> Losses:
    with (
        tempfile.TemporaryDirectory(prefix="collector-drill-") as workdir,
        drill_shop(Path(workdir), setup.collector, setup.config, setup.service_env) as drill,
    ):
        trace_ids = drill.orders_during(lambda: outage(drill), rate, max_orders)
        return drill.losses(trace_ids)


def queue_capacity_bytes() -> float:
    """OTELCOL_QUEUE_BYTES's default, as config.yaml writes it (${env:OTELCOL_QUEUE_BYTES:-N})."""
    written = yaml.safe_load(COLLECTOR_CONFIG.read_text())["exporters"]["otlp_http/tempo"]["sending_queue"]
    found = re.fullmatch(r"\$\{env:OTELCOL_QUEUE_BYTES:-(\d+)\}", str(written["queue_size"]))
    if found is None:
        raise ValueError(f"config.yaml's queue_size is not ${{env:OTELCOL_QUEUE_BYTES:-N}}: {written['queue_size']}")
    return float(found.group(1))


def queue_bytes_per_order(rate: float, seconds: float) -> dict[str, float]:
    """Tempo and Loki both away for ``seconds`` at ``rate``: what each exporter's queue then holds, per order."""
    queued: dict[str, float] = {}

    def both_away(drill: Drill) -> None:
        drill.tempo.stop()
        drill.loki.stop()
        time.sleep(seconds)
        for exporter in QUEUED_EXPORTERS:
            queued[exporter] = drill.collector.own_value("otelcol_exporter_queue_size", exporter=exporter)
        drill.tempo.start()
        drill.loki.start()

    run(Setup("sizing", Collector, COLLECTOR_CONFIG, {}), both_away, rate, int(rate * (seconds + 20)))
    return {exporter: size / (rate * seconds) for exporter, size in queued.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="REV", help="also run REV's Collector and config (e.g. 3afc772)")
    parser.add_argument("--rate", type=float, default=25.0, help="orders per second (25)")
    parser.add_argument("--collector-down", type=float, default=10.0, help="seconds the Collector is away (10)")
    parser.add_argument("--tempo-down", type=float, default=60.0, help="seconds Tempo is away (60; 0: no Tempo drill)")
    args = parser.parse_args(argv)
    if not COLLECTOR_BINARY.exists():
        print(f"no Collector at {COLLECTOR_BINARY.relative_to(ROOT)}: run `make collector` (needs Go)", file=sys.stderr)
        return 2
    setups = [Setup("after (this checkout)", Collector, COLLECTOR_CONFIG, {})]
    if args.before:
        setups.insert(0, build_revision(args.before))
    drills: dict[str, Callable[[Drill], None]] = {
        f"Collector SIGKILLed, back after {args.collector_down:g} s": lambda d: d.kill_collector_for(
            args.collector_down
        ),
        f"Tempo down {args.tempo_down:g} s": lambda d: d.stop_tempo_for(args.tempo_down),
    }
    if not args.tempo_down:
        drills.popitem()
    max_orders = int(args.rate * (max(args.collector_down, args.tempo_down) + 20))
    results = {
        (drill, setup.name): run(setup, outage, args.rate, max_orders)
        for drill, outage in drills.items()
        for setup in setups
    }
    per_order = queue_bytes_per_order(args.rate, SIZING_S)
    print(f"\n{args.rate:g} orders/s; every order looked up in the Tempo and Loki stand-ins\n")
    header = f"{'drill':<36} {'setup':<24} {'orders':>7} {'traces broken':>14} {'log records lost':>17}"
    print(header)
    print("-" * len(header))
    for (drill, setup_name), losses in results.items():
        print(
            f"{drill:<36} {setup_name:<24} {losses.orders:>7} {losses.traces_broken:>14} {losses.log_records_lost:>17}"
        )
    capacity = queue_capacity_bytes()
    print(
        f"\nQueued per order (Tempo and Loki away {SIZING_S:g} s): "
        + ", ".join(f"{name} {size:,.0f} bytes" for name, size in per_order.items())
    )
    for rate in QUEUE_SIZING_RATES:
        minutes = ", ".join(f"{name} {capacity / (size * rate) / 60:.1f}" for name, size in per_order.items())
        print(f"{capacity / 2**20:.0f} MiB per queue lasts, at {rate:g} orders/s (minutes): {minutes}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
