"""What a webhook endpoint may be: its URL, and which event types it takes."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from ledger.core.errors import WebhookUrlRefused

EVERY_TYPE = "*"
LOCAL_HOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_public_address(address: str) -> bool:
    """True for an address a webhook may reach without LEDGER_WEBHOOK_ALLOW_PRIVATE: globally
    routable unicast. Private, loopback, link-local, multicast, reserved, unspecified and shared
    (CGNAT) ranges are not; an IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """The URL as stored, or WebhookUrlRefused. The host's addresses are checked again on every
    connection (the transport), where DNS cannot answer one thing here and another there."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"not a URL: {exc}") from exc
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise WebhookUrlRefused(
            "only https URLs" + ("" if allow_http else " (http needs LEDGER_WEBHOOK_ALLOW_HTTP)")
        )
    host = parts.hostname
    if not host:
        raise WebhookUrlRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("credentials in the URL are refused (they would be logged)")
    if parts.fragment:
        raise WebhookUrlRefused("a URL with a fragment is refused")
    if port == 0:
        raise WebhookUrlRefused("port 0 is refused")
    if not allow_private and _names_local_host(host):
        raise WebhookUrlRefused(
            "a private, loopback or link-local host is refused "
            "(allowed by LEDGER_WEBHOOK_ALLOW_PRIVATE)"
        )
    return url


def _names_local_host(host: str) -> bool:
    if host.lower().rstrip(".") in LOCAL_HOST_NAMES:
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: its addresses are checked when connecting
    return not is_public_address(host)


def matches(event_type: str, patterns: Iterable[str]) -> bool:
    """An exact type, or a prefix ending in `*` (`ledger.transfer.*`; `*`: every type)."""
    for pattern in patterns:
        if pattern.endswith(EVERY_TYPE):
            if event_type.startswith(pattern[:-1]):
                return True
        elif event_type == pattern:
            return True
    return False


def normal_event_types(event_types: list[str] | None) -> list[str]:
    """Stored as given, duplicates dropped, order kept; absent means every type."""
    if not event_types:
        return [EVERY_TYPE]
    return list(dict.fromkeys(event_types))
