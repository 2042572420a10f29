"""A private PostgreSQL server for the tests and the scripts: the machine's own server binaries (Debian's
``postgresql`` package, or ``PG_BIN``), a data directory of its own under the system's temporary directory,
a free loopback port, and a superuser with a password. Standard library only.

initdb and postgres refuse to run as root, so as root they run as Debian's ``postgres`` user, through
``setpriv`` (which execs: the server stays this process's child, so stop() and kill() wait for it and it
never lingers as a zombie for an init that does not reap). fsync stays on: what survives a kill is tested.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SUPERUSER = "postgres"  # the official image's default POSTGRES_USER
DEFAULT_DATABASE = "shop"
SERVER_USER = "postgres"  # Debian's system user, which runs the server when this process is root
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
INITDB_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 60.0
# What differs from PostgreSQL's defaults: only what a test server needs.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",  # every test's pool, and several service replicas at once
}
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def find_postgres_bin() -> Path | None:
    """The directory of the server binaries: ``PG_BIN`` if set; else ``pg_config --bindir``; else the newest
    ``/usr/lib/postgresql/<major>/bin`` (Debian's layout; its pg_config comes with libpq-dev, which the server
    does not need). None when the chosen directory has no initdb."""
    if explicit := os.environ.get("PG_BIN"):
        return _with_initdb(Path(explicit))
    if pg_config := shutil.which("pg_config"):
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False
        ).stdout.strip()
        if bindir and (found := _with_initdb(Path(bindir))):
            return found
    majors = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.parent.name.isdigit()]
    for candidate in sorted(majors, key=lambda path: int(path.parent.name), reverse=True):
        if found := _with_initdb(candidate):
            return found
    return None


def _with_initdb(bin_dir: Path) -> Path | None:
    return bin_dir if (bin_dir / "initdb").is_file() else None


def postgres_major(bin_dir: Path) -> int:
    """The major release of the server in ``bin_dir``: 15 from "postgres (PostgreSQL) 15.18 (Debian ...)"."""
    banner = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=True
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", banner)
    if match is None:
        raise RuntimeError(f"unexpected `postgres --version`: {banner!r}")
    return int(match.group(1))


def _free_port() -> int:
    # harness.processes.free_port's twin: that module needs the dev virtualenv, this one must not.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3, the state, first), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, from the parent PIDs in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the process, and cutime + cstime: the children it has waited for."""
    fields = _stat_fields(pid)
    return sum(int(value) for value in fields[11:15]) if fields is not None else 0


class PostgresServer:
    """One PostgreSQL server: start() initialises and starts it; stop(), kill() and start_again() drill it on
    the same data directory and port; close() (or leaving the ``with`` block) stops it and removes its files.

    The server's files (data directory, Unix socket) live in a directory of its own under the system's
    temporary directory, reachable by the server's user (pytest's and mkdtemp's directories are 0700, and a
    socket path is limited to 107 bytes); ``workdir`` gets the logs of initdb and the server."""

    def __init__(self, bin_dir: Path, workdir: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.port = port
        self.password = secrets.token_hex(16)
        self.log_path = workdir / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._cpu_ticks_of_earlier_runs = 0
        # The server's user: this process's, or as root Debian's unprivileged one.
        self.uid, self.gid = os.geteuid(), os.getegid()
        if self.as_root:
            user = _server_user()
            self.uid, self.gid = user.pw_uid, user.pw_gid
            _check_reachable(Path(tempfile.gettempdir()))
        workdir.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="shop-postgres-"))
        self.data_dir = self.directory / "data"
        if self.as_root:
            os.chown(self.directory, self.uid, self.gid)

    @classmethod
    def start(cls, workdir: Path, *, port: int | None = None, bin_dir: Path | None = None) -> PostgresServer:
        """initdb, start, and create the database ``url()`` names; returns once it accepts connections.
        ``bin_dir`` defaults to find_postgres_bin()."""
        bin_dir = bin_dir or find_postgres_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries: install Debian's postgresql, or set PG_BIN")
        server = cls(bin_dir, workdir, port or _free_port())
        try:
            server._initdb()
            server.start_again()
            server.create_database(DEFAULT_DATABASE)
        except BaseException:
            server.close()
            raise
        return server

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def as_root(self) -> bool:
        """Whether this process is root, and so runs the server as SERVER_USER."""
        return os.geteuid() == 0

    @property
    def pid(self) -> int | None:
        """The postmaster's process ID while it runs."""
        return self._process.pid if self.is_running and self._process is not None else None

    @property
    def is_running(self) -> bool:
        process = self._process
        return process is not None and process.returncode is None and _alive(process.pid)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser over TCP; its unaligned, tuples-only output. A failing
        statement raises (ON_ERROR_STOP)."""
        env = {
            **self._env(),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": SUPERUSER,
            "PGPASSWORD": self.password,
            "PGDATABASE": database,
            "PGCONNECT_TIMEOUT": "10",
        }
        command = [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}) on {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new, empty database owned by the superuser; its URL."""
        self.psql(f'CREATE DATABASE "{_checked_name(name)}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop it, ending any session still connected to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{_checked_name(name)}" WITH (FORCE)')

    def start_again(self) -> None:
        """Start the server on its data directory and port (after stop() or kill(): recovery then runs), and
        return once it accepts connections."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"PostgreSQL is already running (PID {self._process.pid})")
        settings = {**SETTINGS, "port": str(self.port), "unix_socket_directories": str(self.directory)}
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        command += [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._as_server_user(command), cwd=self.directory, env=self._env(), stdout=log, stderr=log
            )
        self._wait_until_ready()

    def stop(self) -> None:
        """A fast shutdown (SIGINT: what ``pg_ctl stop -m fast`` sends): sessions are ended, and what was
        committed is checkpointed. Bounded: after STOP_TIMEOUT_S the server is killed and TimeoutError raised."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        # Keep the exited postmaster unreaped until its CPU is read (WNOWAIT): a zombie's /proc stat is final.
        while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"PostgreSQL did not stop within {STOP_TIMEOUT_S} s: {self.log_tail()}")
            time.sleep(0.05)
        self._cpu_ticks_of_earlier_runs += _cpu_ticks(process.pid)
        process.wait()

    def kill(self) -> None:
        """SIGKILL to the postmaster and every process of it, as ``docker kill`` ends a container: no
        shutdown checkpoint, so the next start_again() must recover from the WAL. Returns once all are gone
        (a new postmaster refuses to start while an old one's process still holds the shared memory)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGSTOP)  # a stopped postmaster starts no process while its tree is read
        tree = [process.pid, *_descendants(process.pid)]
        self._cpu_ticks_of_earlier_runs += self._tree_cpu_ticks()
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(pid) for pid in tree):
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL's processes were still alive {STOP_TIMEOUT_S} s after SIGKILL")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU this server has used over all its runs (not initdb's): the postmaster, its live
        processes, and those it has already waited for (the kernel adds them to its cutime and cstime). A
        killed run counts up to the moment before kill()."""
        running = self._tree_cpu_ticks() if self.is_running else 0
        return (self._cpu_ticks_of_earlier_runs + running) / CLOCK_TICKS

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop it (kill it if it will not stop) and remove its directory; the logs in workdir stay."""
        try:
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _tree_cpu_ticks(self) -> int:
        if self._process is None:
            return 0
        return sum(_cpu_ticks(pid) for pid in [self._process.pid, *_descendants(self._process.pid)])

    def _initdb(self) -> None:
        password_file = self.directory / "password"
        password_file.write_text(self.password)
        password_file.chmod(0o600)
        os.chown(password_file, self.uid, self.gid)
        command = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            # Not syncing initdb's files to disk: a throwaway server has no power loss to survive, and the
            # server itself keeps fsync on, so what a kill drill recovers is still the real thing.
            "--no-sync",
        ]
        try:
            with (self.workdir / "initdb.log").open("ab") as log:
                result = subprocess.run(
                    self._as_server_user(command),
                    cwd=self.directory,
                    env=self._env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=INITDB_TIMEOUT_S,
                    check=False,
                )
        finally:
            password_file.unlink()
        if result.returncode != 0:
            log_text = (self.workdir / "initdb.log").read_text(errors="replace")
            raise RuntimeError(f"initdb failed ({result.returncode}): {log_text[-2000:]}")

    def _wait_until_ready(self) -> None:
        """Until it accepts connections (after any crash recovery), as ``pg_ctl start -w`` tells: the
        postmaster.pid file names this postmaster and says "ready" (probing with connections instead would
        fill the log with "the database system is starting up")."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready(self._process.pid):
            if self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with {self._process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"PostgreSQL did not accept connections within {START_TIMEOUT_S} s: {self.log_tail()}"
                )
            time.sleep(0.05)

    def _ready(self, pid: int) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 8 and lines[0] == str(pid) and lines[7].strip() == "ready"

    def _as_server_user(self, command: list[str]) -> list[str]:
        if not self.as_root:
            return command
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *command]

    def _env(self) -> dict[str, str]:
        """This process's environment without libpq's and the server's variables (PGDATA, PGPORT...)."""
        return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(
            f"as root, PostgreSQL runs as the unprivileged user {SERVER_USER!r}, and there is none here"
            " (Debian's postgresql package makes it)"
        ) from None


def _check_reachable(directory: Path) -> None:
    """The server's user must pass through every directory above its own (it is not their owner)."""
    for parent in (directory, *directory.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"{parent} is not traversable by other users, so {SERVER_USER!r} cannot reach a directory in"
                f" {directory}: point TMPDIR elsewhere"
            )


def _checked_name(name: str) -> str:
    if not DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name (lower case, digits, _; up to 63): {name!r}")
    return name
