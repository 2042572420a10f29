"""Sampling profiles of the running services with py-spy, and who owns the CPU in them.

``make bench BENCH_ARGS="--profile DIR"`` records, for each service, the stacks of whichever thread
holds the GIL (py-spy ``--gil``), so idle waits are not counted, and sorts every sample by the code
that was running: our code, the web stack, or one part of telemetry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLES_PER_S = 100
# py-spy is a dev dependency: look beside this interpreter first, then on PATH.
PY_SPY = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))

# Walking a stack from the innermost frame outwards, the first frame whose file matches decides
# (json.dumps called by the log formatter counts as logging). Order matters: first match wins.
OWNERS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in [
        ("logging", r"pythonjsonlogger/|/logging/__init__\.py|instrumentation/logging/|opentelemetry/(sdk/)?_logs/"),
        (
            "export",
            r"opentelemetry/exporter/|google/protobuf/|/requests/|/urllib3/|/http/client\.py|sdk/_shared_internal/",
        ),
        ("metrics", r"opentelemetry/(sdk/)?metrics/|prometheus_client/"),
        (
            "tracing",
            r"opentelemetry/(sdk/)?trace/|opentelemetry/(context|propagate|propagators|baggage|attributes)/"
            r"|opentelemetry/sdk/resources/",
        ),
        ("instrumentation", r"opentelemetry/"),
        ("our code", r"/shop/"),
        ("sqlite", r"aiosqlite/|sqlite3/"),
        ("web stack", r"aiohttp/|multidict/|yarl/|asyncio/|uvloop/"),
    ]
]
TELEMETRY = ("logging", "export", "metrics", "tracing", "instrumentation")
COLUMNS = (*TELEMETRY, "our code", "sqlite", "web stack", "other")
FRAME_FILE = re.compile(r"\((?P<file>[^()]*?)(:\d+)?\)$")


def owner_of(stack: list[str]) -> str:
    """Who a sample's time belongs to; ``stack`` runs from the thread's root to the running frame."""
    if stack and stack[-1].startswith("run_app "):
        return "web stack"  # aiohttp's run_app is where uvloop's C event loop runs
    for frame in reversed(stack):
        match = FRAME_FILE.search(frame)
        path = match.group("file") if match else frame
        for name, pattern in OWNERS:
            if pattern.search(path):
                return name
    return "other"


def shares(folded: Path) -> tuple[int, dict[str, float]]:
    """Samples in a py-spy ``raw`` (folded) file and each owner's share of them."""
    counts: Counter[str] = Counter()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first entry names the thread
        counts[owner_of(frames)] += int(count)
    total = sum(counts.values())
    return total, {name: counts[name] / total if total else 0.0 for name in COLUMNS}


@contextmanager
def recording(pids: dict[str, int], seconds: int, outdir: Path) -> Iterator[dict[str, Path]]:
    """py-spy on each process for ``seconds``; yields the folded files written when the block ends."""
    if PY_SPY is None:
        raise RuntimeError("py-spy is missing: make venv installs it (requirements-dev.txt)")
    outdir.mkdir(parents=True, exist_ok=True)
    files = {name: outdir / f"{name}.folded" for name in pids}
    spies = {
        name: subprocess.Popen(  # noqa: S603 (py-spy from our own virtualenv, fixed arguments)
            [
                *(PY_SPY, "record", "--gil", "--full-filenames", "--nonblocking", "--threads"),
                *("--rate", str(SAMPLES_PER_S), "--duration", str(seconds), "--format", "raw"),
                *("--output", str(files[name]), "--pid", str(pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, pid in pids.items()
    }
    try:
        yield files
    finally:
        for name, spy in spies.items():
            _, stderr = spy.communicate(timeout=seconds + 60)
            if spy.returncode != 0 or not files[name].exists():
                raise RuntimeError(
                    f"py-spy could not profile {name} (exit {spy.returncode}): {stderr.strip()[-500:]}"
                    " -- it needs ptrace permission (root, or CAP_SYS_PTRACE in a container)"
                )


def report(files: dict[str, Path]) -> None:
    print("Where each service's CPU goes under full load (share of py-spy samples holding the GIL):")
    width = max(len(name) for name in files)
    columns = (*COLUMNS, "all telemetry")
    print(f"{'':{width}}  {'samples':>7}  " + "  ".join(columns))
    for name, folded in files.items():
        total, share = shares(folded)
        share["all telemetry"] = sum(share[c] for c in TELEMETRY)
        cells = "  ".join(f"{share[c]:>{len(c)}.0%}" for c in columns)
        print(f"{name:{width}}  {total:7d}  {cells}")
    print(f"folded stacks (for flamegraph.pl or speedscope): {', '.join(str(f) for f in files.values())}")
