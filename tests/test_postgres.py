"""The PostgreSQL the tests run (harness/postgres.py): the machine's server, at the major compose pins, started
privately; a database per test; and the drills a server must survive (a fast shutdown, a SIGKILL)."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness.compose import dotenv
from harness.postgres import SERVER_USER, SUPERUSER, PostgresServer, find_postgres_bin, postgres_major
from tools import postgres_bin


def psql_at(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    """psql given nothing but the URL, as a service is."""
    command = [str(postgres_bin() / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql]
    return subprocess.run(command, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)


def postmaster_uid(server: PostgresServer) -> int:
    assert server.pid is not None
    status = Path(f"/proc/{server.pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


@pytest.mark.unit
def test_the_machines_server_is_the_major_compose_pins() -> None:
    """compose runs the official image postgres:${POSTGRES_VERSION}; the tests, the machine's binaries."""
    pinned = re.fullmatch(r"(\d+)\.\d+-\w+", dotenv()["POSTGRES_VERSION"])
    assert pinned is not None, dotenv()["POSTGRES_VERSION"]
    assert postgres_major(postgres_bin()) == int(pinned.group(1))


@pytest.mark.unit
def test_pg_bin_names_the_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = postgres_bin()
    monkeypatch.setenv("PG_BIN", str(found))
    assert find_postgres_bin() == found
    monkeypatch.setenv("PG_BIN", str(tmp_path))  # no initdb there
    assert find_postgres_bin() is None


@pytest.mark.processes
def test_each_test_gets_an_empty_database_of_its_own_at_its_url(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    url = urlsplit(postgres_url)
    assert (url.scheme, url.hostname, url.port, url.username) == (
        "postgresql",
        "127.0.0.1",
        postgres_server.port,
        SUPERUSER,
    )
    database = url.path.lstrip("/")
    assert database.startswith("test_each_test_gets_an_empty_database")
    result = psql_at(postgres_url, "SELECT current_database(), count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert result.stdout.strip() == f"{database}|0", result.stderr
    created = psql_at(postgres_url, "CREATE TABLE orders (id text PRIMARY KEY); INSERT INTO orders VALUES ('a')")
    assert created.returncode == 0, created.stderr
    assert postgres_server.psql("SELECT id FROM orders", database) == "a"


@pytest.mark.processes
def test_the_server_listens_on_loopback_only_asks_for_a_password_and_keeps_fsync(
    postgres_server: PostgresServer,
) -> None:
    settings = (
        "SELECT current_setting('listen_addresses'), current_setting('max_connections'), current_setting('fsync')"
    )
    assert postgres_server.psql(settings) == "127.0.0.1|200|on"
    assert postgres_server.psql("SHOW password_encryption") == "scram-sha-256"
    wrong = psql_at(postgres_server.url().replace(postgres_server.password, "wrong"), "SELECT 1")
    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr


@pytest.mark.processes
def test_the_server_runs_as_an_unprivileged_user(postgres_server: PostgresServer) -> None:
    """initdb and postgres refuse root: as root (CI), Debian's postgres user runs them."""
    expected = pwd.getpwnam(SERVER_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert postmaster_uid(postgres_server) == expected != 0


@pytest.fixture(scope="module")
def drilled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A server of the drills' own: they stop and kill it."""
    with PostgresServer.start(tmp_path_factory.mktemp("drilled"), bin_dir=postgres_bin()) as server:
        server.psql("CREATE TABLE IF NOT EXISTS kept (n int)", "shop")
        yield server


def count_rows(server: PostgresServer) -> int:
    return int(server.psql("SELECT count(*) FROM kept", "shop"))


@pytest.mark.processes
def test_a_fast_shutdown_and_a_start_again_keep_the_rows(drilled_server: PostgresServer) -> None:
    before = count_rows(drilled_server)
    drilled_server.psql("INSERT INTO kept SELECT generate_series(1, 100)", "shop")
    port = drilled_server.port
    drilled_server.stop()
    assert not drilled_server.is_running
    drilled_server.start_again()
    assert drilled_server.port == port
    assert count_rows(drilled_server) == before + 100


@pytest.mark.processes
def test_a_killed_server_recovers_every_committed_row(drilled_server: PostgresServer) -> None:
    before = count_rows(drilled_server)
    for _ in range(5):  # five commits, none checkpointed: only the WAL holds them at the kill
        drilled_server.psql("INSERT INTO kept SELECT generate_series(1, 20)", "shop")
    killed_pid = drilled_server.pid
    log_size = drilled_server.log_path.stat().st_size
    drilled_server.kill()
    assert not drilled_server.is_running
    assert killed_pid is not None
    assert not Path(f"/proc/{killed_pid}").exists()
    drilled_server.start_again()
    with drilled_server.log_path.open() as log:
        log.seek(log_size)
        assert "automatic recovery in progress" in log.read()
    assert count_rows(drilled_server) == before + 100


@pytest.mark.processes
def test_cpu_seconds_count_the_servers_work_across_runs(drilled_server: PostgresServer) -> None:
    before = drilled_server.cpu_seconds()
    drilled_server.psql("SELECT count(*) FROM generate_series(1, 3000000)")  # about 0.3 s of one backend
    busy = drilled_server.cpu_seconds()
    assert busy - before >= 0.1
    drilled_server.stop()
    assert drilled_server.cpu_seconds() >= busy
    drilled_server.start_again()
    assert drilled_server.cpu_seconds() >= busy


@pytest.mark.processes
def test_close_stops_the_server_and_removes_its_files(tmp_path: Path) -> None:
    with PostgresServer.start(tmp_path, bin_dir=postgres_bin()) as server:
        pid = server.pid
        assert server.data_dir.is_dir()
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()
    assert not server.directory.exists()
    assert "database system is shut down" in server.log_tail()
