"""A webhook receiver for the tests: a real HTTP/1.1 server on loopback, written on asyncio
streams so that it can misbehave exactly (hang, redirect, answer without end, drip its status
line), and that records every request it got."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.embedded import LOOPBACK

HEADERS_BYTES_MAX = 64 * 1024


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


# What the receiver does with a request: answer a status (int), or one of the misbehaviours.
Behaviour = Callable[[Received], "int | str"]


@dataclass
class Receiver:
    behaviour: Behaviour = field(default=lambda _r: 200)
    requests: list[Received] = field(default_factory=list)
    open_requests: int = 0  # requests read and not answered (a hanging receiver's count)
    bytes_written: int = 0  # of the answers (the endless one's count)
    redirect_to: str = ""
    delay_seconds: float = 0.0  # before each answer: a receiver that takes its time
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    def event_ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > HEADERS_BYTES_MAX:
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(headers, body)
                self.requests.append(received)
                if not await self._answer(received, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, received: Received, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is done."""
        what = self.behaviour(received)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if isinstance(what, int):
            writer.write(f"HTTP/1.1 {what} X\r\ncontent-length: 2\r\n\r\nok".encode())
            await writer.drain()
            return True
        if what == "hang":
            self.open_requests += 1
            try:
                await asyncio.Event().wait()  # never answers; ends when the server closes
            finally:
                self.open_requests -= 1
        if what == "redirect":
            writer.write(
                f"HTTP/1.1 302 Found\r\nlocation: {self.redirect_to}\r\n"
                "content-length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            return True
        if what == "endless":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
            chunk = b"x" * 65536
            while True:
                writer.write(chunk)
                await writer.drain()
                self.bytes_written += len(chunk)
        if what == "drip":
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.25)
            return True
        return False


@contextlib.asynccontextmanager
async def receiving(behaviour: Behaviour | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver() if behaviour is None else Receiver(behaviour=behaviour)
    server = await asyncio.start_server(receiver._handle, LOOPBACK, 0)
    receiver._server = server
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        for task in list(receiver._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
