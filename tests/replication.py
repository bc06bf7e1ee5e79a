"""A primary and a synchronous streaming standby: two clusters on this machine made with the
server's own tools (initdb, pg_basebackup with a replication slot, pg_ctl promote), for the tests
of contract 9.3.

fsync is off on both (the tests kill processes, never the machine: what a killed postmaster had
written is in the page cache and survives it); synchronous_commit stays on, so a commit is
acknowledged only once the standby has flushed it. Only the first cluster lists the standby in
`synchronous_standby_names` (set after the base backup, so the standby does not inherit it): once
promoted, the standby waits for no one, as Patroni would configure it with no replica left."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from ledger.embedded import LOOPBACK, EmbeddedPostgres, pg_tool

SYNC_DEADLINE_SECONDS = 30.0
STANDBY_NAME = "standby"
SETTINGS = ("fsync=off", "full_page_writes=off", "wal_keep_size=64MB", "max_wal_senders=4")


@dataclass
class ReplicatedPair:
    base: Path
    primary: EmbeddedPostgres = field(init=False)
    standby: EmbeddedPostgres = field(init=False)

    def __post_init__(self) -> None:
        self.primary = EmbeddedPostgres(self.base / "a", settings=(*SETTINGS, "cluster_name=a"))
        self.standby = EmbeddedPostgres(
            self.base / "b", settings=(*SETTINGS, f"cluster_name={STANDBY_NAME}")
        )

    def start(self, databases: tuple[str, ...] = ("ledger",)) -> ReplicatedPair:
        self.primary.start()
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            for name in databases:
                conn.execute(f'CREATE DATABASE "{name}"')
        self.standby.data_dir.mkdir(parents=True)
        if self.primary.user is not None:
            entry = pwd.getpwnam(self.primary.user)
            os.chown(self.standby.data_dir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(pg_tool("pg_basebackup")),
                *("-h", LOOPBACK, "-p", str(self.primary.port), "-U", "postgres"),
                *("-D", str(self.standby.pgdata)),
                "--write-recovery-conf",  # standby.signal and primary_conninfo
                *("--wal-method=stream", "--create-slot", f"--slot={STANDBY_NAME}"),
                "--checkpoint=fast",
                "--no-sync",
            ],
            check=True,
            user=self.primary.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # it warns about the socket file in the data directory
        )
        self.standby.start()
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + SYNC_DEADLINE_SECONDS
            while self.sync_state(conn) != "sync":
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not become synchronous")
                time.sleep(0.05)
        return self

    @staticmethod
    def sync_state(conn: psycopg.Connection[object]) -> str | None:
        row = conn.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            (STANDBY_NAME,),
        ).fetchone()
        return None if row is None else str(row[0])

    def url(self, database: str = "ledger") -> str:
        """libpq's multi-host URL: whichever of the two is the primary."""
        hosts = f"{LOOPBACK}:{self.primary.port},{LOOPBACK}:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def kill_primary(self) -> int:
        """SIGKILL to the primary's postmaster (its backends notice and exit by themselves)."""
        pid = int((self.primary.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        return pid

    def promote(self) -> None:
        subprocess.run(
            [str(pg_tool("pg_ctl")), "-D", str(self.standby.pgdata), "-w", "promote"],
            check=True,
            user=self.standby.user,
            stdout=subprocess.DEVNULL,
        )

    def remove(self) -> None:
        self.standby.remove()
        self.primary.remove()
        shutil.rmtree(self.base, ignore_errors=True)
