"""`make load`'s Locust file against the three services as real processes: every kind of action in
the default mix gets its documented answer, nothing is charged twice, and bad options are refused.
Bounded: 20 actions/s for 10 s, loopback only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness import ROOT
from harness.database import order_statuses
from harness.processes import Shop, process_env, running_shop

pytestmark = pytest.mark.processes

LOCUSTFILE = ROOT / "load" / "locustfile.py"
KINDS = ("paid", "declined", "slow", "failing", "invalid", "lookup", "retry")


def settled_statuses(database_url: str) -> dict[str, int]:
    """Orders by status, once none is pending (a request cut off at the end may still be finishing)."""
    deadline = time.monotonic() + 10
    while True:
        statuses = order_statuses(database_url)
        if "pending" not in statuses or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def locust(host: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """As ``make load`` runs it: the harness (for its orders) on PYTHONPATH."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    return subprocess.run(
        [*command, "--host", host, *args],
        env=process_env(PYTHONPATH=str(ROOT)),
        cwd=LOCUSTFILE.parent,  # not the repository root, which python -m would put on the path
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory.mktemp("load"), GATEWAY_ALLOW_FAULT_HEADERS="true") as shop:
        yield shop


def test_the_default_mix_gets_every_documented_answer_and_charges_once(shop: Shop) -> None:
    # A mix with every kind well represented, so that a 10 s run sees each of them.
    mix = "paid=30,declined=10,slow=10,failing=10,invalid=10,lookup=15,retry=15"
    run = locust(
        shop.gateway,
        *("-u", "10", "-r", "10", "-t", "10s", "--stop-timeout", "5"),  # as make load: in-flight actions finish
        *("--rate", "20", "--mix", mix, "--slow-ms", "300"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for kind in KINDS:
        assert re.search(rf"^\s+{kind}\s+\d+ as documented$", run.stderr, re.M), (kind, run.stderr[-3000:])
    assert re.search(r"\[\s*\d+ s\] \d+ requests", run.stderr), run.stderr[-2000:]

    statuses = settled_statuses(shop.env["ORDERS_DATABASE_URL"])
    assert set(statuses) == {"paid", "payment_declined", "payment_failed"}, statuses
    payments_log = [json.loads(line) for line in shop.running["shop.payments"].stdout_path.read_text().splitlines()]
    charged = [r["order.id"] for r in payments_log if r.get("message") == "payment authorized"]
    assert len(charged) == len(set(charged)) == statuses["paid"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--mix", "paid=1,bogus=2"], "unknown kind 'bogus'"),
        (["--mix", "paid=0"], "every kind weight 0"),
        (["--rate", "0"], "--rate must be above 0"),
    ],
)
def test_bad_options_are_refused_with_one_clear_line(option: list[str], message: str) -> None:
    run = locust("http://127.0.0.1:9", "-t", "1s", *option, timeout_s=30)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "make load: " in run.stderr, run.stderr[-2000:]
    assert message in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
