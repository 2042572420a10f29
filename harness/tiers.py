"""Two Collector tiers as processes (docs/scaling.md): agents that route spans by trace ID to gateways that
derive span metrics and the service graph. For tests/test_two_tier.py and ``make bench-collector``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.backends import Collector
from harness.otlp_sink import OtlpSink


@dataclass
class Tiers:
    agents: list[Collector]
    gateways: list[Collector]
    # One Tempo stand-in per gateway: together they are what Tempo receives, apart they show which
    # gateway each span went through.
    tempos: list[OtlpSink]
    loki: OtlpSink

    @property
    def collectors(self) -> list[Collector]:
        return [*self.agents, *self.gateways]

    def wait_until_idle(self) -> None:
        """Agents first: what they still hold is on its way to a gateway."""
        for collector in self.collectors:
            collector.wait_until_idle()


def static_resolver(gateways: list[Collector]) -> str:
    """The load_balancing exporter's resolver node, as agent.yaml reads it from the environment."""
    return json.dumps({"static": {"hostnames": [gateway.otlp_grpc_target for gateway in gateways]}})


@contextmanager
def two_tiers(
    workdir: Path,
    agents: int = 2,
    gateways: int = 2,
    trace_routing: bool = True,
    record: bool = True,
    **agent_env: str,
) -> Iterator[Tiers]:
    """Gateways first (agents route to what they find), then agents. ``trace_routing=False`` is the control:
    each agent sends everything to one gateway of its own (agent i to gateway i mod n), plain forwarding
    with the same configs. ``record=False``: the stand-ins keep nothing (for a benchmark). ``agent_env``:
    more variables for the agents."""
    with ExitStack() as stack:
        tempos = [stack.enter_context(OtlpSink(record)) for _ in range(gateways)]
        loki = stack.enter_context(OtlpSink(record))
        started: list[Collector] = []

        @stack.callback
        def stop() -> None:
            for collector in reversed(started):
                collector.process.stop()

        def start(name: str, role: str, tempo: OtlpSink, **env: str) -> Collector:
            collector = Collector(workdir / name, tempo.endpoint, f"{loki.endpoint}/otlp", role, **env)
            started.append(collector)
            return collector

        gateway_list = [start(f"gateway-{i}", "gateway", tempos[i], HOSTNAME=f"gateway-{i}") for i in range(gateways)]
        agent_list = [
            start(
                f"agent-{i}",
                "agent",
                tempos[0],  # unused: an agent sends no spans to Tempo
                OTELCOL_GATEWAY_RESOLVER=static_resolver(
                    gateway_list if trace_routing else [gateway_list[i % gateways]]
                ),
                **agent_env,
            )
            for i in range(agents)
        ]
        yield Tiers(agent_list, gateway_list, tempos, loki)
