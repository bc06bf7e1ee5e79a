"""Debian's PgBouncer and HAProxy as real processes on loopback ports, for the tests of contract
9.3 (`make test` installs both with apt-get). Each is started with a configuration file of its own
in a temporary directory and stopped by its process group; nothing here touches a system
service."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledger.embedded import LOOPBACK, PG_SYSTEM_USER, free_port

START_DEADLINE_SECONDS = 20.0


def _wait_for_port(process: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{what} exited with {process.returncode} at start: {said}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} in time")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _run_as() -> str | None:
    """PgBouncer refuses to run as root: as root, it drops to the embedded server's user."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(PG_SYSTEM_USER)
        return PG_SYSTEM_USER
    return "nobody"


@dataclass
class PgBouncer:
    """PgBouncer 1.18 in transaction mode in front of one server (every database name goes to
    the same-named database there), trusting the `postgres` user as the suite's server does."""

    directory: Path
    server_port: int
    pool_size: int = 20
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> PgBouncer:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        user = _run_as()
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={LOOPBACK} port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {LOOPBACK}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 1000\n"
            f"default_pool_size = {self.pool_size}\n"
            "server_reset_query =\n"
            # Idle server connections close soon: a test that waits for its database's backends
            # to leave (their statistics flush at exit) sees them go.
            "server_idle_timeout = 1\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n" + (f"user = {user}\n" if user else "")
        )
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.process = subprocess.Popen(
            [binary, str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.process, self.port, "pgbouncer", self.directory / "pgbouncer.log")
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class HAProxy:
    """HAProxy 2.6 balancing HTTP round-robin over `backends` (loopback ports), checking each
    with `GET /ready`, so a backend that stops answering leaves the rotation."""

    directory: Path
    backends: Sequence[int]
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> HAProxy:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        servers = "".join(
            f"    server api{n} {LOOPBACK}:{port} check inter 500ms fall 2 rise 1\n"
            for n, port in enumerate(self.backends)
        )
        config = self.directory / "haproxy.cfg"
        config.write_text(
            "global\n"
            "    maxconn 2000\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 2s\n"
            "    timeout client 60s\n"
            "    timeout server 60s\n"
            "    retries 2\n"
            "    option redispatch\n"
            f"frontend api\n    bind {LOOPBACK}:{self.port}\n    default_backend ledger\n"
            "backend ledger\n"
            "    balance roundrobin\n"
            "    option httpchk GET /ready\n" + servers
        )
        self.process = subprocess.Popen(
            [binary, "-W", "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.process, self.port, "haproxy", config)
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


@contextlib.contextmanager
def running(service: PgBouncer | HAProxy) -> Iterator[PgBouncer | HAProxy]:
    service.start()
    try:
        yield service
    finally:
        service.stop()
