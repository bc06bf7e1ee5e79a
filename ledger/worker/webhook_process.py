"""Webhook delivery in a process of its own, the child of `ledger worker`.

Delivery is the worker's heaviest job under load (an HTTP request per event and endpoint), and
in the worker's process it took the relay's CPU: the relay's event lag rose with the webhook
backlog. So `ledger worker` runs the dispatcher in a child (`ledger webhook-delivery
--with-parent`, the same settings from the same environment), and the relay, the sealer and
expiry keep their own event loop and interpreter whatever the receivers do.

The worker supervises it as one of its jobs:
- it hands the child its own settings, as one JSON line on the child's stdin (the worker's
  settings need not come from the environment: `ledger dev` makes its own), never in argv or
  the environment;
- it starts the child, and starts it again when it ends (killed, crashed), after a backoff from
  about 1 s doubling to a minute that starts over once a child has run for a minute;
- the child's stdin is a pipe from the worker: when the worker ends in any way (SIGKILL
  included), the pipe closes and the child stops at once, so a dead worker leaves no delivery
  running, and its leader lock (WEBHOOK_DISPATCHER, on the child's own connection, named
  `ledger-webhooks-<worker pid>`) goes with it;
- on SIGTERM the worker stops the child first (SIGTERM, then SIGKILL after a grace period);
- the child's webhook metrics reach the worker's /metrics: every WEBHOOK_METRICS_REPORT_SECONDS
  the child writes their exposition as one line on its stdout, and the worker serves the last
  one it read in place of its own (empty) series.

Failover is unchanged: the lock is still one per database, so with two workers one child
delivers and the other stands by.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator

import msgspec
import structlog
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from ledger.core import limits
from ledger.core.backoff import jittered_backoff_ms
from ledger.core.errors import ConfigurationError
from ledger.core.settings import Settings
from observability import metrics

log = structlog.get_logger("ledger.worker.webhooks")

WEBHOOK_METRICS = (metrics.WEBHOOK_DELIVERIES, metrics.WEBHOOK_RETRYING, metrics.WEBHOOK_LAG)
CHILD_COMMAND = ("-m", "ledger.cli", "webhook-delivery", "--with-parent")
REPORT_LINE_BYTES_MAX = 16 * 1024 * 1024  # one exposition of 100 endpoints is about 300 kB


def child_command() -> list[str]:
    return [sys.executable, *CHILD_COMMAND]


# -- the worker's side -----------------------------------------------------------------------------


class ChildMetrics(Collector):
    """The child's last reported webhook series, served by the worker's registry."""

    def __init__(self) -> None:
        self.text = ""

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.text)

    def describe(self) -> Iterable[Metric]:
        return ()  # families come and go with the child's report: nothing to check at register


class DeliveryProcess:
    """The worker's job that keeps one delivery child running."""

    def __init__(self, settings: Settings, command: list[str] | None = None) -> None:
        self.settings = settings
        self.command = command or child_command()
        self.wake = asyncio.Event()  # set when the child ends: the next step starts another
        self.metrics = ChildMetrics()
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._started_at = 0.0
        self._failures = 0  # children in a row that ended within CHILD_STABLE_SECONDS
        self._next_start = 0.0
        self._serving_metrics = False

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    def serve_metrics(self) -> None:
        """Serve the child's webhook series on this process's /metrics instead of its own."""
        if self._serving_metrics:
            return
        self._serving_metrics = True
        for metric in WEBHOOK_METRICS:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(metric)
        REGISTRY.register(self.metrics)

    async def step(self) -> int:
        process = self._process
        if process is not None and process.returncode is None:
            return 0
        if process is not None:
            await self._reap(process)
        if time.monotonic() < self._next_start:
            return 0
        await self._start()
        return 0

    async def _start(self) -> None:
        self.serve_metrics()
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=REPORT_LINE_BYTES_MAX,
        )
        self._started_at = time.monotonic()
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):  # a child that died at once: reaped next step
                self._process.stdin.write(msgspec.json.encode(self.settings) + b"\n")
                await self._process.stdin.drain()
        self._readers = [
            asyncio.create_task(self._read_reports(self._process)),
            asyncio.create_task(self._watch(self._process)),
        ]
        log.info("webhook.delivery_process_started", pid=self._process.pid)

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        await process.wait()
        self.wake.set()

    async def _read_reports(self, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        if stdout is None:
            return
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line past the limit: skip it, keep the last good report
                continue
            if not line:
                return
            with contextlib.suppress(msgspec.DecodeError):
                self.metrics.text = msgspec.json.decode(line, type=str)

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._readers = []
        self._process = None
        self.metrics.text = ""
        self.restarts += 1
        lived = time.monotonic() - self._started_at
        self._failures = 1 if lived >= limits.WEBHOOK_CHILD_STABLE_SECONDS else self._failures + 1
        delay_ms = jittered_backoff_ms(
            self._failures,
            initial_ms=limits.WEBHOOK_CHILD_RESTART_INITIAL_MS,
            max_ms=limits.WEBHOOK_CHILD_RESTART_MAX_MS,
        )
        self._next_start = time.monotonic() + delay_ms / 1000
        log.warning(
            "webhook.delivery_process_exited",
            pid=process.pid,
            returncode=code,
            restart_in_seconds=round(delay_ms / 1000, 1),
        )

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), limits.WEBHOOK_CHILD_STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._readers = []


# -- the child's side ------------------------------------------------------------------------------


def read_parent_settings() -> Settings:
    """The worker's settings, the first line on stdin (nothing else comes before EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            raise ConfigurationError("the worker closed the pipe before sending the settings")
        data += chunk
    try:
        return msgspec.json.decode(data, type=Settings)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"the worker's settings could not be read: {exc}") from exc


async def exit_with_parent(stop: asyncio.Event) -> None:
    """Set `stop` when stdin (the worker's pipe) closes: the worker has ended, however."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    log.info("webhook.delivery_parent_gone")
    stop.set()


def metrics_report() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    for metric in WEBHOOK_METRICS:
        registry.register(metric)
    text = generate_latest(registry).decode("utf-8")
    return msgspec.json.encode(text) + b"\n"


async def report_metrics(stop: asyncio.Event) -> None:
    """Write the webhook series to stdout, for the worker's /metrics, until `stop`."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    try:
        while not stop.is_set():
            try:
                out.write(metrics_report())
            except (BrokenPipeError, OSError):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), limits.WEBHOOK_METRICS_REPORT_SECONDS)
    finally:
        with contextlib.suppress(OSError):
            out.close()


def instance_name(with_parent: bool) -> str:
    """The dispatcher's connection is named after the worker that runs it (its parent), so an
    operator (and a test) finds which worker delivers in pg_stat_activity."""
    return str(os.getppid() if with_parent else os.getpid())
