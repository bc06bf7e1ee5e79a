"""The HTTP client of webhook delivery: aiohttp with real time limits, no redirects, no proxies
from the environment, and a connector that checks every address it really connects to.

Server-side request forgery is checked where it can be: on the connection. The resolver looks
the host up once per new connection (no DNS cache), drops every address that is not public
(unless LEDGER_WEBHOOK_ALLOW_PRIVATE) and hands aiohttp only the remaining ones, which it
connects to as they are: there is no second lookup for a DNS answer to change between check and
connect (rebinding). The socket factory then checks the address of every socket about to be
connected, which covers a URL whose host is an address literal too (aiohttp does not resolve
those). TLS still verifies the certificate against the URL's host name.

Connections are kept alive between deliveries (at most the lane's concurrency, per endpoint):
aiohttp's C parser and the reuse made a POST 3 to 5 times cheaper in CPU than the httpx
transport it replaced (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ledger.webhooks.rules import is_public_address

ADDRESSES_TRIED_MAX = 4  # addresses of one host tried in turn before the attempt fails
KEEPALIVE_EXPIRY_SECONDS = 30.0


class AddressRefused(OSError):
    """The host resolves only to addresses a webhook may not reach (aiohttp: a connection
    error, whose cause is this)."""


def _allowed(address: str, allow_private: bool) -> bool:
    return allow_private or is_public_address(address)


class GuardedResolver(AbstractResolver):
    """One lookup, and only the allowed addresses of its answer."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, family=family
            )
        except OSError as exc:
            raise OSError(f"cannot resolve the host: {exc}") from exc
        results: list[ResolveResult] = []
        for info_family, _type, proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            if not _allowed(address, self.allow_private):
                continue
            if any(r["host"] == address for r in results):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": int(sockaddr[1]),
                    "family": info_family,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        if not results:
            raise AddressRefused(
                "the host resolves only to private, loopback or link-local addresses "
                "(allowed by LEDGER_WEBHOOK_ALLOW_PRIVATE)"
            )
        return results[:ADDRESSES_TRIED_MAX]

    async def close(self) -> None:
        return None


def _socket_factory(allow_private: bool) -> Any:
    """A socket for one address aiohttp is about to connect to, if that address is allowed."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _name, sockaddr = addr_info
        if not _allowed(str(sockaddr[0]), allow_private):
            raise AddressRefused(
                "the address is private, loopback or link-local "
                "(allowed by LEDGER_WEBHOOK_ALLOW_PRIVATE)"
            )
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    return make


def guarded_client(*, allow_private: bool, connections_max: int) -> aiohttp.ClientSession:
    """An aiohttp session whose connector connects only to allowed addresses, keeps at most
    `connections_max` connections (alive between deliveries), and takes no proxy from the
    environment. Redirects are refused per request (`attempt`), response bodies are neither
    decompressed nor read past the limit, and every attempt has its own time limit."""
    connector = aiohttp.TCPConnector(
        limit=connections_max,
        limit_per_host=connections_max,
        use_dns_cache=False,
        resolver=GuardedResolver(allow_private=allow_private),
        socket_factory=_socket_factory(allow_private),
        ssl=ssl.create_default_context(),
        keepalive_timeout=KEEPALIVE_EXPIRY_SECONDS,
        happy_eyeballs_delay=None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        timeout=aiohttp.ClientTimeout(total=None),
        raise_for_status=False,
    )
